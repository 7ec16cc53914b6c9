"""The shared harness of the attention kit: references, comparison, timing, builds, inputs.

Every task test and the grader use these modules; no task re-implements them.
"""
