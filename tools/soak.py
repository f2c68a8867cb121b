#!/usr/bin/env python3
"""The memory budget under attack: each hostile load of issue-level size against a fresh server,
with well-behaved callers measured beside it.

For each attack this starts the server, runs the attack with h2load, and meanwhile runs
net-pathway-load with four calls in flight (its health Check baseline, then EvaluateEligibility),
then reports the server's peak resident memory (VmHWM) and the well-behaved calls' p99. The
budget it reports against is the README's: under 150 MB, and p99 under 100 ms.

    python3 tools/soak.py                        # target/dist binaries, 10 s per attack
    python3 tools/soak.py --seconds 3 --binary target/debug/net-pathway --load target/debug/net-pathway-load

Needs h2load (Debian's nghttp2-client) and openssl (for the bearer token of the flood's server).
Exits non-zero if the server dies or a well-behaved caller is never answered; the figures are
for reading, not asserting, since this machine's speed is not a constant. A well-behaved call
shed with RESOURCE_EXHAUSTED counts as failed in its row.
"""

import argparse
import base64
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

MEMORY_BUDGET_MB = 150
P99_BUDGET_MS = 100.0
ISSUER = "https://idp.soak.example"
AUDIENCE = "net-pathway"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ELIGIBILITY = "/netpathway.v1.EligibilityService/EvaluateEligibility"
SCREENING = "/netpathway.v1.ScreeningService/ScreenCohort"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def identity_provider(work: str):
    """An Ed25519 key as a JWKS file, and a token from it for the well-behaved caller."""
    key = os.path.join(work, "idp.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", key], check=True)
    public = subprocess.run(
        ["openssl", "pkey", "-in", key, "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout[-32:]
    jwks = os.path.join(work, "jwks.json")
    with open(jwks, "w") as f:
        json.dump({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
                             "kid": "soak", "x": b64url(public)}]}, f)
    now = int(time.time())
    header = b64url(json.dumps({"alg": "EdDSA", "typ": "JWT", "kid": "soak"}).encode())
    claims = b64url(json.dumps({"iss": ISSUER, "aud": AUDIENCE, "sub": "soak-caller",
                                "roles": ["evaluate"], "iat": now, "nbf": now,
                                "exp": now + 3600}).encode())
    message = os.path.join(work, "token-message")
    with open(message, "w") as f:
        f.write(f"{header}.{claims}")
    signature = subprocess.run(
        ["openssl", "pkeyutl", "-sign", "-inkey", key, "-rawin", "-in", message],
        check=True,
        capture_output=True,
    ).stdout
    return jwks, f"{header}.{claims}.{b64url(signature)}"


def framed(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def bodies(work: str, load: str):
    """The attacks' request bodies: a valid eligibility request asking about every therapy, in
    the BASIC and the FULL view, and a cohort of such FULL-view patients, from the load
    generator's mix (`--view` sets the view of what it writes); a 1 MB message; and 30,000
    empty prior treatments (each a problem)."""
    mix = os.path.join(ROOT, "examples", "load", "patient-mix.jsonl")
    full_mix = os.path.join(work, "every-therapy-mix.jsonl")
    with open(mix) as src, open(full_mix, "w") as dst:
        for line in src:
            if line.strip():
                request = json.loads(line)
                # Every therapy: the largest answer a patient can have.
                request.pop("therapies", None)
                dst.write(json.dumps(request) + "\n")
    frames = {}
    for view in ("basic", "full"):
        frames[view] = os.path.join(work, f"frames-{view}")
        subprocess.run([load, "--write-frames", frames[view], "--mix", full_mix, "--view", view,
                        "--cohort-patients", "200"],
                       check=True, capture_output=True)
    megabyte = os.path.join(work, "megabyte.grpc")
    with open(megabyte, "wb") as f:
        f.write(framed(b"\x0a" * (1024 * 1024 - 5)))
    # EvaluateEligibilityRequest.patient (2) holding PatientProfile.prior_treatments (6) x 30,000.
    patient = b"\x32\x00" * 30_000
    violations = os.path.join(work, "violations.grpc")
    with open(violations, "wb") as f:
        f.write(framed(b"\x12" + varint(len(patient)) + patient))
    return {
        "eligibility basic": os.path.join(frames["basic"], "eligibility-1.grpc"),
        "eligibility full": os.path.join(frames["full"], "eligibility-1.grpc"),
        "cohort": os.path.join(frames["full"], "screen-cohort.grpc"),
        "megabyte": megabyte,
        "violations": violations,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary: str, args, work: str):
        self.port = free_port()
        self.data = tempfile.mkdtemp(dir=work)
        self.process = subprocess.Popen(
            [binary, "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.data,
             "--admin-listen", "off", *args],
            env={**os.environ, "RUST_LOG": "warn"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"the server exited with {self.process.returncode} while starting")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        sys.exit("the server did not start listening in 30 s")

    def peak_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        self.process.kill()
        self.process.wait()


def attack(name, server_args, h2load_args, body, path, args, token=None):
    if args.attack not in name:
        return None
    server = Server(args.binary, [*server_args, *args.server_arg], args.work)
    url = f"http://127.0.0.1:{server.port}{path}"
    h2load = subprocess.Popen(
        # The attack lasts through both of net-pathway-load's phases and their warm-ups.
        ["h2load", *h2load_args, "-D", str(2 * (args.seconds + 1) + 3), "-d", body,
         "-H", "content-type: application/grpc", "-H", "te: trailers", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(1)  # the attack's connections open before the well-behaved callers measure
    load = [args.load, "--target", f"http://127.0.0.1:{server.port}", "--connections", "1",
            "--concurrency", "4", "--duration", str(args.seconds), "--warmup", "1"]
    env = {**os.environ}
    if token:
        env["NETPATHWAY_TOKEN"] = token
    measured = subprocess.run(load, capture_output=True, text=True, env=env)
    h2load_out, _ = h2load.communicate(timeout=2 * args.seconds + 60)
    alive = server.process.poll() is None
    peak = server.peak_mb()
    server.stop()
    p99 = {}
    for line in (measured.stdout + measured.stderr).splitlines():
        found = re.match(r"(.*?)\s+[\d.]+ \w+/s.*p99\s+([\d.]+) ms.*\((\d+) ok, (\d+) failed", line)
        if found:
            rpc = "Check" if "Check" in found.group(1) else found.group(1).split()[-1]
            p99[rpc] = (float(found.group(2)), int(found.group(3)), int(found.group(4)))
    statuses = next((line.strip() for line in h2load_out.splitlines()
                     if line.startswith("status codes")), "no status line")
    return {"attack": name, "alive": alive, "peak_mb": peak, "p99": p99,
            "load_ok": measured.returncode == 0, "load_output": measured.stdout + measured.stderr,
            "h2load": statuses}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/dist/net-pathway"))
    parser.add_argument("--load", default=os.path.join(ROOT, "target/dist/net-pathway-load"))
    parser.add_argument("--seconds", type=int, default=10,
                        help="measured seconds per phase (health Check, then EvaluateEligibility)")
    parser.add_argument("--attack", default="",
                        help="run only the attacks whose name contains this")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="a further server argument, for every attack (repeatable)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        args.work = work
        jwks, token = identity_provider(work)
        body = bodies(work, args.load)
        jwt = ["--jwks-file", jwks, "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE]
        results = [
            attack("unauthenticated 1 MB bodies, 4 x 250 streams", jwt,
                   ["-c", "4", "-m", "250"], body["megabyte"], ELIGIBILITY, args, token),
            attack("2,000 concurrent BASIC calls, 20 x 100", [],
                   ["-c", "20", "-m", "100"], body["eligibility basic"], ELIGIBILITY, args),
            attack("2,000 concurrent FULL calls, 20 x 100", [],
                   ["-c", "20", "-m", "100"], body["eligibility full"], ELIGIBILITY, args),
            attack("2,000 FULL calls that never read their answers, 20 x 100", [],
                   ["-c", "20", "-m", "100", "-w", "0"], body["eligibility full"], ELIGIBILITY,
                   args),
            attack("30,000 problems per request, 16 x 4", [],
                   ["-c", "16", "-m", "4"], body["violations"], ELIGIBILITY, args),
            # Room for every stream, as an attacker spreading them over light connections has.
            attack("500 FULL-view streams that never read", ["--max-concurrent-calls", "1024"],
                   ["-c", "5", "-m", "100", "-w", "0"], body["cohort"], SCREENING, args),
        ]
    results = [r for r in results if r]
    failed = False
    print(f"| attack | peak RSS (budget {MEMORY_BUDGET_MB} MB) | health p99 | "
          f"EvaluateEligibility p99 (budget {P99_BUDGET_MS:.0f} ms) | attack's HTTP answers |")
    print("|---|---|---|---|---|")
    for r in results:
        check = r["p99"].get("Check", (float("nan"), 0, 0))
        unary = r["p99"].get("EvaluateEligibility", (float("nan"), 0, 0))
        print(f"| {r['attack']} | {r['peak_mb']:.0f} MB | {check[0]:.1f} ms ({check[1]} ok, "
              f"{check[2]} failed) | {unary[0]:.1f} ms ({unary[1]} ok, {unary[2]} failed) "
              f"| {r['h2load']} |")
        if not r["alive"] or not check[1] or not unary[1]:
            failed = True
            print(f"  {r['attack']}: server alive {r['alive']}; net-pathway-load said:\n"
                  + r["load_output"], file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
