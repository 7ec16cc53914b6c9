"""``python -m task6.compile``: build every CUDA extension the task-6 model imports.

Your two kernels (task 4's ``custom_flash_attention`` and task 5's
``custom_flash_attention_decode``) and the provided ``decode_linear`` (the
model's linear layers in decode). harness/tasks.py lists them.
"""
import sys

from harness.build import compile_main

if __name__ == "__main__":
    sys.exit(compile_main("task6"))
