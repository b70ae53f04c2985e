"""The HTTP API against ``.delay()``: small documents uploaded over HTTP vs sent from Python, same run.

    python -m bench bench_api [--count 200] [--concurrency 16] [--rounds 1]

One private Redis, one real worker (2 pool processes) and one real API server
(uvicorn, ``python -m background_tasks.api_app``). Each run sends ``--count`` fresh
files of the same sizes (distinct content, so nothing is a duplicate): by
``process_document_file.delay(path)``, or by ``POST /documents`` multipart uploads
from ``--concurrency`` requests in flight. Runs go ABBA (delay, API, API, delay)
per round, so drift of a loaded machine falls on both sides. Measured per run:

- submit: files accepted per second (``.delay()`` returned / the API answered 202);
- end to end: files per second from the first send until the last task, its
  follow-ups included, had stored its result.

Target: the API's end-to-end rate at least 0.8x that of ``.delay()``: an upload
pays for HTTP, multipart parsing, a copy into the inbox and a type check, all of
it on the same two cores as the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import httpx

from bench.common import print_table, private_stack
from tests.support import ApiServer

PROCESS = "background_tasks.document_tasks.process_document_file"
TARGET = 0.8


def make_files(folder: Path, count: int) -> list[Path]:
    """``count`` small text files of fixed sizes and distinct content."""
    folder.mkdir(parents=True)
    run = uuid.uuid4().hex
    paths = []
    for i in range(count):
        path = folder / f"note-{i:04d}.txt"
        body = f"Benchmark note {i} of run {run}. " + "The committee approved the budget for the next year. " * 20
        path.write_text(body)
        paths.append(path)
    return paths


def run_delay(stack, paths: list[Path]) -> tuple[float, float]:
    started_wall, started = time.time(), time.perf_counter()
    results = [stack.app.send_task(PROCESS, args=[str(p)]) for p in paths]
    submit = len(paths) / (time.perf_counter() - started)
    return submit, len(paths) / stack.makespan(results, started_wall)


async def _upload(url: str, token: str, paths: list[Path], concurrency: int) -> list[str]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, limits=limits, timeout=300
    ) as client:

        async def one(path: Path) -> str:
            async with gate:
                response = await client.post("/documents", files={"file": (path.name, path.read_bytes())})
            if response.status_code != 202:
                raise RuntimeError(f"{path.name}: {response.status_code} {response.text}")
            return response.json()["id"]

        return list(await asyncio.gather(*(one(p) for p in paths)))


def run_api(stack, server: ApiServer, token: str, paths: list[Path], concurrency: int) -> tuple[float, float]:
    started_wall, started = time.time(), time.perf_counter()
    ids = asyncio.run(_upload(server.url, token, paths, concurrency))
    submit = len(paths) / (time.perf_counter() - started)
    results = [SimpleNamespace(id=task_id) for task_id in ids]
    return submit, len(paths) / stack.makespan(results, started_wall)


def main(argv: list[str] | None = None) -> int:
    from background_tasks.api.auth import digest, new_token

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    token = new_token()
    measured: dict[str, list[tuple[float, float]]] = {"delay": [], "api": []}
    with tempfile.TemporaryDirectory(prefix="midas-bench-api-") as tmp:
        root = Path(tmp)
        docs = root / "docs"  # outside the data folder, which MIDAS never reads
        docs.mkdir()
        with private_stack(root, concurrency=2, extra_roots=[docs], MIDAS_API_TOKENS=digest(token)) as stack:
            server = ApiServer(stack.env, root / "logs").wait_ready()
            try:
                warm = make_files(docs / "warm", 4)  # imports, schema, the embedding model in the worker
                run_delay(stack, warm[:2])
                run_api(stack, server, token, warm[2:], 2)
                runs = 0
                for _ in range(args.rounds):
                    for kind in ("delay", "api", "api", "delay"):
                        paths = make_files(docs / f"run-{runs}", args.count)
                        runs += 1
                        if kind == "delay":
                            measured[kind].append(run_delay(stack, paths))
                        else:
                            measured[kind].append(run_api(stack, server, token, paths, args.concurrency))
                        print(f"  {kind:<5} submit {measured[kind][-1][0]:8.1f}/s  end to end "
                              f"{measured[kind][-1][1]:6.1f} docs/s", flush=True)  # fmt: skip
            finally:
                server.stop()
    delay_submit = statistics.median(s for s, _ in measured["delay"])
    delay_e2e = statistics.median(e for _, e in measured["delay"])
    api_submit = statistics.median(s for s, _ in measured["api"])
    api_e2e = statistics.median(e for _, e in measured["api"])
    print_table(
        ("path", "files/run", "submit files/s", "end to end docs/s", "vs .delay()"),
        [
            (".delay(path)", args.count, f"{delay_submit:.1f}", f"{delay_e2e:.1f}", "1.00"),
            (
                f"POST /documents ({args.concurrency} in flight)",
                args.count,
                f"{api_submit:.1f}",
                f"{api_e2e:.1f}",
                f"{api_e2e / delay_e2e:.2f}",
            ),
        ],
    )
    ratio = api_e2e / delay_e2e
    print(f"\nAPI/.delay() end-to-end ratio: {ratio:.2f} (target >= {TARGET})")
    print(f"API/.delay() submit ratio: {api_submit / delay_submit:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
