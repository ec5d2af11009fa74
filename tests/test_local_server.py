import subprocess
import sys

from lad.local_server import free_port, wait_until_healthy


def test_healthy_server_is_found_and_a_dead_one_is_named(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until_healthy(proc, f"http://127.0.0.1:{port}/", 30) is None
    finally:
        proc.kill()
        proc.wait()
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait()
    assert wait_until_healthy(dead, f"http://127.0.0.1:{free_port()}/", 30) == "exited with 3"


def test_silent_server_times_out_with_the_url():
    port = free_port()
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert wait_until_healthy(idle, f"http://127.0.0.1:{port}/health", 1) == \
            f"did not answer http://127.0.0.1:{port}/health within 1 s"
    finally:
        idle.kill()
        idle.wait()
