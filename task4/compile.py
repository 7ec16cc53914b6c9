"""Build this task's CUDA extension: `python -m task4.compile` (add -v to see the compiler's commands).

Run it after every change to task4/attention_kernel.cu. The tests build the
extension themselves when it is missing or out of date, so this is mainly for
reading compiler errors without the test output around them.

It also builds the bonus part, task4/attention_kernel_tc.cu (extension
custom_flash_attention_tc, README "Task 4 bonus"), beside it. The bonus is
optional: when that file is absent or does not compile, this says so and still
succeeds, and only the bonus tests fail.
"""
from harness.build import compile_main

if __name__ == "__main__":
    raise SystemExit(compile_main("task4"))
