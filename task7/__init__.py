"""Task 7: GPT-2 in Hugging Face transformers generating text with the task-4 and task-5 kernels."""
