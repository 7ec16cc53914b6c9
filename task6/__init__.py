"""Task 6: an end-to-end model (prefill, then decode) on the task-4 and task-5 kernels."""
