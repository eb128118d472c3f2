"""scripts/healthcheck.py: the compose health check that stops the container's init after N failures
in a row (a real process stands in for PID 1; a real HTTP server for the API)."""

import http.server
import subprocess
import threading

from scripts.healthcheck import check
from scripts.serve_process import free_port


def _serve(status: int):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/api/v1/health"


def test_three_failures_in_a_row_stop_the_process(tmp_path):
    init = subprocess.Popen(["sleep", "600"])
    state = tmp_path / "failures"
    dead = f"http://127.0.0.1:{free_port()}/api/v1/health"
    try:
        assert check(dead, state, 3, init.pid, 2) == 1
        assert check(dead, state, 3, init.pid, 2) == 1
        assert init.poll() is None and state.read_text() == "2"
        assert check(dead, state, 3, init.pid, 2) == 1
        assert init.wait(timeout=10) == -15  # SIGTERM
    finally:
        init.kill()


def test_a_success_resets_the_count_and_503_counts_as_failure(tmp_path):
    init = subprocess.Popen(["sleep", "600"])
    state = tmp_path / "failures"
    ok, ok_url = _serve(200)
    bad, bad_url = _serve(503)
    try:
        assert check(bad_url, state, 3, init.pid) == 1
        assert check(bad_url, state, 3, init.pid) == 1
        assert check(ok_url, state, 3, init.pid) == 0 and not state.exists()
        assert check(bad_url, state, 3, init.pid) == 1
        assert init.poll() is None
    finally:
        ok.shutdown(), bad.shutdown()
        init.kill()
