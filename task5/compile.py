"""``python -m task5.compile``: build every CUDA extension task 5 imports.

That is your decode extension (``custom_flash_attention_decode``, from
``task5/attention_kernel.cu``) and the task-4 prefill extension it relies on
(``custom_flash_attention``). harness/tasks.py lists them.
"""
import sys

from harness.build import compile_main

if __name__ == "__main__":
    sys.exit(compile_main("task5"))
