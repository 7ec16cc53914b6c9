"""harness.proctree: the grader (a child subreaper) ends the orphans a stage leaves behind, and
spares the processes of the stages still running in other threads (grader.pipeline runs every
task's build and correctness tests at once)."""
import subprocess
import sys
import textwrap

#: Runs in a process of its own: a test must not make pytest itself a subreaper.
SCRIPT = textwrap.dedent("""
    import os, subprocess, sys, threading, time
    from harness.proctree import reap_orphans, release_owned, set_subreaper, start_owned

    assert set_subreaper()
    # An owned child of another stage: still running while a reap happens, then exiting with 3.
    running = start_owned(lambda: subprocess.Popen(["sh", "-c", "sleep 1; exit 3"]))
    # An owned child that has already exited (a zombie its Popen has not waited for yet).
    exited = start_owned(lambda: subprocess.Popen(["sh", "-c", "exit 4"]))
    # An orphan: a stage's process that left a sleeper behind, which is handed to us.
    leaver = subprocess.Popen(["sh", "-c", "sleep 60 >/dev/null & echo $!"], stdout=subprocess.PIPE, text=True)
    orphan = int(leaver.stdout.read().strip())
    leaver.wait()
    time.sleep(0.3)
    reaper = threading.Thread(target=reap_orphans)  # another stage ending, in its own thread
    reaper.start()
    reaper.join()
    time.sleep(0.3)
    try:
        with open(f"/proc/{orphan}/stat") as f:
            orphan_state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        orphan_state = "gone"
    print("orphan", orphan_state)
    print("running", running.wait(10))
    print("exited", exited.wait(10))
    for proc in (running, exited):
        release_owned(proc.pid)
""")


def test_reaping_orphans_spares_owned_children_and_their_exit_status():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert lines["orphan"] in ("gone", "Z"), f"the orphan survived the reap: {lines}"
    assert lines["running"] == "3", f"a running owned child was killed or lost its exit status: {lines}"
    assert lines["exited"] == "4", f"an exited owned child's status was taken by the reap: {lines}"
