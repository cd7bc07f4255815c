"""Dask scale-out keeps every guarantee of a local run: the same counts and certificate, a killed worker
loses nothing and counts nothing twice, a failing task is reported once, a bad address is one line."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from certprune.cluster import chunk_size, connect, run_chunks
from certprune.errors import CertpruneError
from certprune.fairness.verify import verify_fairness
from tests.conftest import MODELS, REPO

distributed = pytest.importorskip("distributed")
GERMAN = MODELS / "german_small.onnx"
PROPERTY = REPO / "properties" / "german_fairness_sex.yaml"


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as local:
        yield local


def certificate(report) -> str:
    body = report.certificate()
    for partition in body["partitions"]:
        partition.pop("seconds", None)
    return json.dumps(body, sort_keys=True, default=str)


def test_the_cluster_gives_the_local_certificate(cluster, tmp_path):
    local = verify_fairness(GERMAN, PROPERTY, jobs=1, progress=False, limit=24)
    remote = verify_fairness(GERMAN, PROPERTY, progress=False, limit=24, cluster=cluster.scheduler_address,
                             journal_path=tmp_path / "j.jsonl")
    assert local.counts() == remote.counts() and certificate(local) == certificate(remote)
    lines = (tmp_path / "j.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 24  # the header, then each partition once, as it arrived


def test_a_killed_worker_loses_nothing(cluster, tmp_path):
    with distributed.Client(cluster.scheduler_address) as client:
        pids = list(client.run(os.getpid).values())
    journal = tmp_path / "j.jsonl"
    killed = []

    def kill_when_started():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            if journal.exists() and len(journal.read_text().splitlines()) >= 3:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.02)

    killer = threading.Thread(target=kill_when_started)
    killer.start()
    remote = verify_fairness(GERMAN, PROPERTY, progress=False, limit=80, cluster=cluster.scheduler_address,
                             journal_path=journal)
    killer.join()
    assert killed, "the run ended before a worker could be killed"
    local = verify_fairness(GERMAN, PROPERTY, jobs=1, progress=False, limit=80)
    assert certificate(local) == certificate(remote)
    indices = [json.loads(line)["partition"] for line in journal.read_text().splitlines()[1:]]
    assert sorted(indices) == sorted(set(indices)) and len(indices) == 80


def test_a_failing_task_is_reported_not_retried(cluster):
    with connect(cluster.scheduler_address) as client:
        with pytest.raises(CertpruneError, match="task\\(s\\) failed on the cluster \\(not retried\\): TypeError"):
            list(run_chunks(client, chunk_size, "not a number", [1, 2, 3], size=1))


def test_bad_cluster_specs_are_one_line():
    for spec, message in (("local:0", "N >= 1"), ("localhost", "must be local:N or a scheduler address")):
        with pytest.raises(CertpruneError, match=message), connect(spec):
            pass


def test_a_gate_on_the_cluster_equals_the_local_gate(cluster, tmp_path):
    from certprune.gate.run import run_gate

    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""model: {MODELS / 'mnist_mlp_100x2.onnx'}
checks:
  - name: robust
    certify: {{data: mnist, eps: 0.02, samples: 6, timeout: 10}}
    require: {{certified_accuracy: ">= 0.5"}}
""")
    local = run_gate(policy)
    remote = run_gate(policy, cluster=cluster.scheduler_address)
    strip = lambda result: [(r["index"], r["status"]) for r in result["checks"][0]["figures"]["per_eps"]["0.02"]["records"]]  # noqa: E731
    assert strip(local) == strip(remote) and local["outcome"] == remote["outcome"] == "pass"


def test_a_batch_on_the_cluster_equals_the_local_batch(cluster, tmp_path):
    from certprune.bab.batch import run_batch
    from certprune.decide import decide_vnnlib

    lines = (REPO / "tests" / "data" / "acasxu" / "instances.csv").read_text().splitlines()
    csv = tmp_path / "few.csv"
    csv.write_text("\n".join(line.replace("onnx/", f"{REPO}/tests/data/acasxu/onnx/")
                             .replace("vnnlib/", f"{REPO}/tests/data/acasxu/vnnlib/") for line in lines[:4]) + "\n")
    local = {r["row"]: r["result"] for r in run_batch(csv, decide_vnnlib, timeout_override=60)}
    remote = {r["row"]: r["result"] for r in run_batch(csv, decide_vnnlib, timeout_override=60, cluster=cluster.scheduler_address)}
    assert local == remote and len(local) == 3  # the header and three ACAS Xu instances
