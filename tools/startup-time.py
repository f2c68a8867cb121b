#!/usr/bin/env python3
"""Start to SERVING: starts the dist binary (`cargo build --profile dist`) three times on a fresh data directory and
times exec to the listening socket (health is SERVING from the first accepted call), then
asks grpc.health.v1 Check to confirm. Needs `cargo build --profile dist` and grpcurl: $GRPCURL,
else the README's .venv/bin/grpcurl, else grpcurl on the PATH."""
import os, shutil, subprocess, time, socket, tempfile
GRPCURL = os.environ.get("GRPCURL") or (
    ".venv/bin/grpcurl" if os.path.exists(".venv/bin/grpcurl") else shutil.which("grpcurl"))
if GRPCURL is None:
    raise SystemExit("grpcurl not found: set GRPCURL, or install it as the README says")
def listening():
    try:
        socket.create_connection(("127.0.0.1", 50071), timeout=0.05).close()
        return True
    except OSError:
        return False

for run in range(3):
    if listening():
        raise SystemExit("127.0.0.1:50071 is already taken: stop whatever listens there first")
    d = tempfile.mkdtemp()
    t0 = time.monotonic()
    p = subprocess.Popen(["target/dist/net-pathway", "--listen", "127.0.0.1:50071", "--admin-listen", "off", "--data-dir", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not listening():
            if p.poll() is not None:
                raise SystemExit(f"net-pathway exited with {p.returncode} before listening")
            time.sleep(0.001)
        t1 = time.monotonic()
        out = subprocess.run([GRPCURL, "-plaintext", "127.0.0.1:50071", "grpc.health.v1.Health/Check"], capture_output=True, text=True).stdout
        print(f"start to listening: {1000*(t1-t0):.0f} ms (fresh data dir); health: {out.strip().replace(chr(10),' ')}")
    finally:
        p.terminate(); p.wait()
