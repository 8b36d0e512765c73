"""Launch `openai_stub_server.StubServer` as a server *process*, the way `vllm serve` runs: for the managed-server
tests. Besides the port it can act out what real servers do: take a while to load (`--startup-delay`), crash
while loading (`--fail`), crash later (`--die-after`), and spawn a helper process that ignores SIGTERM (`--child`,
like an engine worker that hangs on shutdown), so the tests can check nothing outlives `close()`.

    python tests/llm/stub_server_main.py --host 127.0.0.1 --port 8123 [--startup-delay 0.5] [--child]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from openai_stub_server import StubServer  # noqa: E402

def _template(query: str) -> str:
    *head, last = query.split()
    return json.dumps({"template": " ".join(head) + " <fi>a thing</fi>",
                       "compatible_document_description": f"A document that describes a {last} in detail."})


_STUBBORN_CHILD = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--startup-delay", type=float, default=0.0, help="seconds 'loading the model' before binding")
    parser.add_argument("--fail", help="print this as an error while loading and exit with code 3")
    parser.add_argument("--die-after", type=float, help="exit with code 4 this many seconds after binding")
    parser.add_argument("--child", action="store_true", help="spawn a helper that ignores SIGTERM")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds every request takes (a slow model)")
    parser.add_argument("--reply", choices=["echo", "template"], default="echo",
                        help="template: answer like the released templatizer, slotting the query's last word")
    parser.add_argument("--lora-modules", nargs="*", default=[], help="NAME=DIR: also serve these names (vLLM's flag)")
    args = parser.parse_args()

    print(f"stub: pid {os.getpid()} CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}", flush=True)
    if args.child:
        child = subprocess.Popen([sys.executable, "-c", _STUBBORN_CHILD])
        print(f"stub: child pid {child.pid}", flush=True)
    time.sleep(args.startup_delay)
    if args.fail:
        print(f"ERROR stub: {args.fail}", file=sys.stderr, flush=True)
        sys.exit(3)
    server = StubServer(args.host, args.port)  # raises "Address already in use" when the port is taken
    server.every_delay = args.delay
    for module in args.lora_modules:
        name, folder = module.split("=", 1)
        assert (Path(folder) / "adapter_config.json").is_file(), f"no adapter in {folder}"
        server.models.append(name)
    if args.reply == "template":
        server.responder = _template
    if args.die_after is not None:
        threading.Timer(args.die_after, lambda: os._exit(4)).start()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"stub: serving on {server.url}", flush=True)
    server.serve_forever(poll_interval=0.05)
    server.server_close()
    print("stub: stopped on SIGTERM", flush=True)


if __name__ == "__main__":
    main()
