"""Drill 3: an S3 outage mid-tokenization. A TCP proxy on 127.0.0.1 sits in front of the moto server (so the
bucket survives the outage); it drops every connection for a few seconds right after the first done
marker. The job either rides it out (s3fs/botocore retries) or reports failed shards, and a rerun completes.
Never a torn shard marked done: every marker's tar has the marker's size, sha256 and keys.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from drill_utils import REPO, assert_done_shards_valid, tree_bytes, write_shards


class FlakyProxy:
    """Forward 127.0.0.1:port -> upstream; ``down()`` resets live connections and refuses new ones."""

    def __init__(self, upstream_port: int):
        self.upstream = ("127.0.0.1", upstream_port)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.up = True
        self.refused = 0  # connections refused while down
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if not self.up:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                client.close()
                self.refused += 1
                continue
            server = socket.create_connection(self.upstream)
            with self.lock:
                self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def down(self):
        self.up = False
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conns.clear()

    def close(self):
        self.sock.close()


@pytest.mark.slow
@pytest.mark.drill
def test_s3_outage_mid_tokenization(ray_local, moto_s3, s3_bucket, drill_tiny_dir, tmp_path):
    import boto3

    from pipelines.tokenize.config import load_tokenize_config
    from pipelines.tokenize.driver import run_tokenize

    write_shards(tmp_path / "in", [{f"t{i}": (1.5, 16000, 1, "flac")} for i in range(4)])
    s3 = boto3.client("s3", endpoint_url=moto_s3)
    for p in sorted((tmp_path / "in").iterdir()):
        s3.upload_file(str(p), s3_bucket, f"corpus/{p.name}")
    proxy = FlakyProxy(int(moto_s3.rsplit(":", 1)[1]))
    common = [f"model={drill_tiny_dir}", "progress=false", "compute.torch_threads=1", "tracking.enabled=false"]
    cfg = load_tokenize_config(REPO / "configs/tokenize/default.yaml", [
        *common, f"input=s3://{s3_bucket}/corpus/", f"output=s3://{s3_bucket}/tokens",
        f"storage.endpoint_url=http://127.0.0.1:{proxy.port}"])

    def markers() -> list[str]:
        out = s3.list_objects_v2(Bucket=s3_bucket, Prefix="tokens/_done/").get("Contents", [])
        return [o["Key"] for o in out]

    outage = {}
    running = threading.Event()  # set while the first run_tokenize call is in progress

    def saboteur():
        deadline = time.monotonic() + 300
        while not markers() and time.monotonic() < deadline:
            time.sleep(0.2)
        outage["at_markers"] = len(markers())
        outage["job_running_at_start"] = running.is_set()
        proxy.down()
        start = time.monotonic()
        while time.monotonic() - start < 6.0 or (proxy.refused == 0 and time.monotonic() - start < 60):
            time.sleep(0.2)  # at least 6 s, and until the job has tried S3 during the outage
        outage["refused"] = proxy.refused
        outage["job_running_at_end"] = running.is_set()
        proxy.up = True
        outage["seconds"] = round(time.monotonic() - start, 1)

    t = threading.Thread(target=saboteur, daemon=True)
    t.start()
    t0 = time.perf_counter()
    running.set()
    raised = False
    try:
        first = run_tokenize(cfg, log=lambda _: None)
        first_outcome = f"completed ok={first.ok}, failed={sorted(first.failed)}"
    except Exception as e:  # noqa: BLE001  (a clear error is an accepted outcome; the rerun must recover)
        raised = True
        first_outcome = f"raised {type(e).__name__}: {str(e)[:200]}"
        assert "s3" in str(e).lower() or "connect" in str(e).lower() or "endpoint" in str(e).lower(), str(e)
    finally:
        running.clear()
    first_s = time.perf_counter() - t0
    t.join(timeout=90)
    proxy.up = True
    # The fault happened to a running job: it began mid-run, the job's S3 connections were refused during it,
    # and the job was still running when it ended (or the first run failed on it with a clear error).
    assert outage.get("job_running_at_start"), f"the outage began after the first run ended: {outage}"
    assert outage["refused"] >= 1, f"the job made no S3 connection during the outage: {outage}"
    assert outage["job_running_at_end"] or raised, f"the first run finished before the outage ended: {outage}"

    def done_markers():
        import json

        return {json.loads(s3.get_object(Bucket=s3_bucket, Key=k)["Body"].read())["shard"]:
                json.loads(s3.get_object(Bucket=s3_bucket, Key=k)["Body"].read()) for k in markers()}

    def read(name):
        return s3.get_object(Bucket=s3_bucket, Key=f"tokens/{name}")["Body"].read()

    valid_after_outage = assert_done_shards_valid(done_markers(), read)
    second = run_tokenize(cfg, log=lambda _: None)
    assert second.ok
    assert assert_done_shards_valid(done_markers(), read) == 4

    clean = load_tokenize_config(REPO / "configs/tokenize/default.yaml", [
        *common, f"input={tmp_path / 'in'}", f"output={tmp_path / 'clean'}"])
    assert run_tokenize(clean, log=lambda _: None).ok
    ref = {k: v for k, v in tree_bytes(tmp_path / "clean").items() if k.endswith(".tar")}
    assert {k: read(k) for k in ref} == ref, "token shards differ from a clean local run"
    proxy.close()
    print(f"S3 outage of {outage.get('seconds')} s after {outage.get('at_markers')} done marker(s), "
          f"{outage['refused']} connection(s) refused: first run "
          f"{first_outcome} in {first_s:.1f} s; {valid_after_outage} marked shard(s) valid; rerun ran "
          f"{second.shards_run} shard(s) -> 4/4 valid, tars byte-identical to a clean local run")
