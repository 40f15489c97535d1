"""What Chroma leaves behind after each kind of delete, on a local index and on a `chroma run` server.

    python bench/chroma_residue.py

Two collections hold the same four records with list, string, int, float and bool metadata; then each kind of
delete runs in turn, and after each the server's or the folder's SQLite catalog is searched for rows that name a
record, segment or collection that no longer exists (docvec.residue.find), and for segment folders of deleted
segments. Finally a new collection's records are read back: do they carry values of deleted records?
Prints one line per step and store; writes bench/results/chroma_residue.json.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from docvec.residue import find  # noqa: E402

META = {"tags": ["s", "t"], "k": 1, "f": 0.5, "b": True, "s": "x"}


def steps(client: Any) -> list[tuple[str, Callable[[], Any]]]:
    vectors = np.random.default_rng(0).random((4, 8)).astype(np.float32)
    made: dict[str, Any] = {}

    def create() -> None:
        for name in ("aaa", "bbb"):
            made[name] = client.create_collection(name, embedding_function=None)
            made[name].add(ids=list("wxyz"), embeddings=vectors, documents=list("abcd"), metadatas=[META] * 4)

    def docvec_drop() -> None:
        doomed = client.create_collection("ddd", embedding_function=None)
        doomed.add(ids=list("wxyz"), embeddings=vectors, documents=list("abcd"), metadatas=[META] * 4)
        doomed.delete(ids=doomed.get(include=[])["ids"])
        client.delete_collection("ddd")

    def inherit() -> str:
        fresh = client.create_collection("ccc", embedding_function=None)
        fresh.add(ids=["n1", "n2", "n3"], embeddings=vectors[:3], documents=["n"] * 3,
                  metadatas=[{"k": 9}] * 3)
        return json.dumps(fresh.get(include=["metadatas"])["metadatas"])

    return [
        ("two collections of 4 records", create),
        ("delete(ids=[w])", lambda: made["aaa"].delete(ids=["w"])),
        ("delete(where k=1, ids=[x])", lambda: made["aaa"].delete(ids=["x"], where={"k": 1})),
        ("update(tags=None)", lambda: made["aaa"].update(ids=["y"], metadatas=[{"tags": None}])),
        ("update(list over list)", lambda: made["aaa"].update(ids=["y"], metadatas=[{"tags": ["r"]}])),
        ("upsert over an existing id", lambda: made["aaa"].upsert(ids=["z"], embeddings=vectors[:1],
                                                                   documents=["n"], metadatas=[{"k": 2}])),
        ("records deleted, then delete_collection (docvec)", docvec_drop),
        ("delete_collection (another remains)", lambda: client.delete_collection("bbb")),
        ("delete_collection (the last)", lambda: client.delete_collection("aaa")),
        ("new records read back", inherit),
    ]


def run(store: str, client: Any, folder: Path) -> list[dict[str, Any]]:
    rows = []
    for name, step in steps(client):
        out = step()
        time.sleep(0.2 if store == "server" else 0)  # the server commits its log asynchronously
        row = {"store": store, "step": name, "residue": find(folder)}
        if isinstance(out, str):
            row["metadatas"] = out
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    local = Path(tempfile.mkdtemp(prefix="residue-local-"))
    rows = run("local", chromadb.PersistentClient(path=str(local), settings=settings), local)
    served = Path(tempfile.mkdtemp(prefix="residue-server-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    chroma = Path(sys.executable).with_name("chroma")
    proc = subprocess.Popen([str(chroma), "run", "--path", str(served), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        rows += run("server", chromadb.HttpClient(host="127.0.0.1", port=port, settings=settings), served)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    out = REPO / "bench" / "results" / "chroma_residue.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
