"""Static checks of everything under infra/: manifests parse, have what their kind needs, point at files and flags
that exist, agree with each other (image, Ray version, Secrets, head Service) and never hold a literal secret."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
K8S_FILES = sorted((INFRA / "kubernetes").glob("*.yaml"))
RAY_UP_FILES = sorted((INFRA / "ray-up").glob("*.yaml"))
DOCKERFILE = INFRA / "Dockerfile"
PROJECT_VERSION = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE).group(1)

SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)
AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
AWS_SECRET_LITERAL = re.compile(r"(?i)aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+]{40}\b")


def _load(path: Path) -> list[dict[str, Any]]:
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


K8S_DOCS = [(path.name, doc) for path in K8S_FILES for doc in _load(path)]


def _docs(kind: str) -> list[tuple[str, dict[str, Any]]]:
    return [(name, doc) for name, doc in K8S_DOCS if doc.get("kind") == kind]


def _walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every container anywhere in a document (head, workers, submitter, CronJob pod)."""
    return [c for node in _walk(doc) if isinstance(node, dict) for c in node.get("containers", []) or []]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def _secret_ref(entry: dict[str, Any]) -> tuple[str, str]:
    ref = entry["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def _ray_cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    specs = [(f"{name}:{doc['metadata']['name']}", doc["spec"]) for name, doc in _docs("RayCluster")]
    specs += [(f"{name}:{doc['metadata']['name']}", doc["spec"]["rayClusterSpec"]) for name, doc in _docs("RayJob")]
    return specs


CLUSTER_SPECS = [pytest.param(where, spec, id=where) for where, spec in _ray_cluster_specs()]


def _python_commands(tokens: list[str]) -> list[tuple[str, list[str]]]:
    """``(script, args)`` for every ``python jobs/x.py ...`` in a token list; a ``--`` ends the arguments."""
    found = []
    for i, token in enumerate(tokens[:-1]):
        if Path(token).name in ("python", "python3") and tokens[i + 1].endswith(".py"):
            args = []
            for arg in tokens[i + 2 :]:
                if arg == "--":
                    break
                args.append(arg)
            found.append((tokens[i + 1], args))
    return found


def _all_python_commands() -> list[tuple[str, str, list[str]]]:
    commands = []
    for name, doc in _docs("RayJob"):
        commands += [(name, s, a) for s, a in _python_commands(shlex.split(doc["spec"]["entrypoint"]))]
    for name, doc in K8S_DOCS:
        for container in _containers(doc):
            tokens = [str(t) for t in container.get("command", []) + container.get("args", [])]
            commands += [(name, s, a) for s, a in _python_commands(tokens)]
    return commands


# ----------------------------------------------------------------------------------------------- cron syntax

_CRON_FIELDS = [
    (0, 59, {}),
    (0, 23, {}),
    (1, 31, {}),
    (1, 12, {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}),
    (0, 7, {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}),
]


def _cron_value(text: str, low: int, high: int, names: dict[str, int]) -> int:
    value = names.get(text.lower()) if text.lower() in names else int(text)
    if not low <= value <= high:
        raise ValueError(f"{text} is outside {low}-{high}")
    return value


def validate_cron(expression: str) -> None:
    """Raise ValueError unless ``expression`` is a standard 5-field cron schedule."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"{expression!r} has {len(fields)} fields, cron needs 5")
    for field, (low, high, names) in zip(fields, _CRON_FIELDS):
        for part in field.split(","):
            base, _, step = part.partition("/")
            if step and (not step.isdigit() or int(step) == 0):
                raise ValueError(f"bad step in {part!r}")
            if base == "*":
                continue
            first, _, last = base.partition("-")
            start = _cron_value(first, low, high, names)
            if last and _cron_value(last, low, high, names) < start:
                raise ValueError(f"empty range {base!r}")


@pytest.mark.parametrize("expression", ["30 1 * * *", "*/15 0-6 1,15 jan-mar mon-fri", "0 0 * * 7"])
def test_cron_validator_accepts(expression: str) -> None:
    validate_cron(expression)


@pytest.mark.parametrize("expression", ["30 1 * *", "60 1 * * *", "0 24 * * *", "0 0 0 * *", "*/0 * * * *",
                                        "0 0 * 13 *", "5-1 * * * *", "@daily"])
def test_cron_validator_rejects(expression: str) -> None:
    with pytest.raises(ValueError):
        validate_cron(expression)


# ------------------------------------------------------------------------------------------------ manifests


def test_every_manifest_parses_and_each_kind_is_present() -> None:
    assert K8S_FILES and RAY_UP_FILES
    for path in K8S_FILES:
        for doc in _load(path):
            assert doc.get("apiVersion") and doc.get("kind"), f"{path.name}: a document without apiVersion/kind"
            assert doc.get("metadata", {}).get("name"), f"{path.name}: {doc['kind']} without metadata.name"
            assert doc["kind"] != "Secret", f"{path.name}: Secrets are created by the operator, never committed"
    kinds = {doc["kind"] for _, doc in K8S_DOCS}
    assert {"RayCluster", "RayJob", "CronJob"} <= kinds
    for name, doc in _docs("RayCluster") + _docs("RayJob"):
        assert doc["apiVersion"] == "ray.io/v1", name
    for name, doc in _docs("CronJob"):
        assert doc["apiVersion"] == "batch/v1", name


@pytest.mark.parametrize(("where", "spec"), CLUSTER_SPECS)
def test_ray_cluster_spec_is_complete(where: str, spec: dict[str, Any]) -> None:
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict), where
    assert head["rayStartParams"].get("dashboard-host") == "0.0.0.0", f"{where}: Jobs API unreachable from pods"
    head_containers = head["template"]["spec"]["containers"]
    assert any(p["containerPort"] == 8265 for p in head_containers[0].get("ports", [])), where
    groups = spec["workerGroupSpecs"]
    assert groups and len({g["groupName"] for g in groups}) == len(groups), where
    for group in groups:
        assert isinstance(group["rayStartParams"], dict), where
        assert group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"], where
    for container in head_containers + [c for g in groups for c in g["template"]["spec"]["containers"]]:
        assert container["image"], where
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        assert {"cpu", "memory"} <= set(requests) and {"cpu", "memory"} <= set(limits), f"{where}: {container}"
    assert "nvidia.com/gpu" not in str(head_containers), f"{where}: the head should not hold a GPU"
    gpu_groups = [g for g in groups if "nvidia.com/gpu" in str(g["template"]["spec"]["containers"][0]["resources"])]
    assert gpu_groups, f"{where}: no GPU worker group"
    for group in gpu_groups:
        resources = group["template"]["spec"]["containers"][0]["resources"]
        assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"], where
        assert any(t.get("key") == "nvidia.com/gpu" for t in group["template"]["spec"].get("tolerations", [])), where


def test_rayjob_runs_an_entrypoint_on_its_own_cluster() -> None:
    for name, doc in _docs("RayJob"):
        spec = doc["spec"]
        assert isinstance(spec["entrypoint"], str) and _python_commands(shlex.split(spec["entrypoint"])), name
        assert "rayClusterSpec" in spec or "clusterSelector" in spec, name
        if "rayClusterSpec" in spec:
            assert spec.get("shutdownAfterJobFinishes") is True, f"{name}: the GPU cluster would outlive the job"


def test_cronjob_schedules_a_submission_to_the_head_service() -> None:
    heads = {f"{doc['metadata']['name']}-head-svc" for _, doc in _docs("RayCluster")}
    for name, doc in _docs("CronJob"):
        validate_cron(doc["spec"]["schedule"])
        assert doc["spec"].get("concurrencyPolicy") == "Forbid", f"{name}: two nightly runs could overlap"
        job = doc["spec"]["jobTemplate"]["spec"]
        pod = job["template"]["spec"]
        assert pod["restartPolicy"] in ("Never", "OnFailure"), name
        (container,) = pod["containers"]
        assert container["image"], name
        tokens = [str(t) for t in container["command"] + container.get("args", [])]
        scripts = [script for script, _ in _python_commands(tokens)]
        assert scripts[:2] == ["jobs/submit.py", "jobs/score_archive.py"], f"{name}: {scripts}"
        address = tokens[tokens.index("--address") + 1]
        assert re.fullmatch(r"https?://([a-z0-9-]+)(\.[a-z0-9.-]+)?:8265", address), address
        assert address.split("//")[1].split(".")[0].split(":")[0] in heads, f"{name}: {address} is not a head Service"
        timeout = float(tokens[tokens.index("--timeout") + 1])
        assert timeout < job["activeDeadlineSeconds"], f"{name}: Kubernetes would kill submit.py before its timeout"


def test_entrypoints_point_at_scripts_in_the_repo() -> None:
    commands = _all_python_commands()
    assert {script for _, script, _ in commands} >= {"jobs/train_luss.py", "jobs/submit.py", "jobs/score_archive.py"}
    for name, script, args in commands:
        assert script.startswith("jobs/") and (REPO / script).is_file(), f"{name}: {script} is not in the repo"
        for flag, value in zip(args, args[1:]):
            if flag == "--config":
                assert (REPO / value).is_file(), f"{name}: {value} is not in the repo"


def test_entrypoint_flags_are_accepted_by_the_scripts() -> None:
    wanted: dict[str, set[str]] = {}
    for _, script, args in _all_python_commands():
        wanted.setdefault(script, set()).update(a.split("=")[0] for a in args if a.startswith("--"))
    # All --help runs at once: each imports the package (torch included) and that dominates the time.
    procs = {
        script: subprocess.Popen([sys.executable, script, "--help"], cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        for script in wanted
    }
    for script, proc in procs.items():
        text, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{script} --help failed:\n{text[-2000:]}"
        for flag in wanted[script]:
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), f"{script} has no {flag}"


def test_one_image_everywhere_matching_the_dockerfile_and_version() -> None:
    images = {c["image"] for _, doc in K8S_DOCS for c in _containers(doc)}
    assert len(images) == 1, f"manifests use several images: {images}"
    (image,) = images
    assert image.rsplit(":", 1)[1] == PROJECT_VERSION, f"{image} is not tagged with version {PROJECT_VERSION}"
    assert f"-t {image} " in DOCKERFILE.read_text(), f"infra/Dockerfile does not document building {image}"


def test_one_ray_version_everywhere() -> None:
    versions = {spec["rayVersion"] for _, spec in _ray_cluster_specs()}
    docker_pin = re.search(r"^ARG RAY_VERSION=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    ray_up_pins = {m for p in RAY_UP_FILES for m in re.findall(r"ray\[[\w,]+\]==([\d.]+)", p.read_text())}
    assert docker_pin and versions == {docker_pin.group(1)} == ray_up_pins


def test_ray_containers_share_the_cluster_token_and_s3_secret() -> None:
    token_refs, s3_refs = set(), set()
    for name, doc in K8S_DOCS:
        for container in _containers(doc):
            env = _env(container)
            assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", f"{name}: {container['name']}"
            token_refs.add(_secret_ref(env["RAY_AUTH_TOKEN"]))
            if container["name"].startswith("ray-"):  # head and workers read and write the stores
                s3_refs.update(_secret_ref(env[k])[0] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
                assert env["AWS_ENDPOINT_URL"]["valueFrom"]["secretKeyRef"].get("optional") is True, name
    for _, doc in _docs("RayCluster"):
        if doc["spec"].get("enableInTreeAutoscaling"):
            env = {e["name"]: e for e in doc["spec"]["autoscalerOptions"]["env"]}
            token_refs.add(_secret_ref(env["RAY_AUTH_TOKEN"]))
    assert len(token_refs) == 1, f"the submitter and the cluster must use one token Secret: {token_refs}"
    assert len(s3_refs) == 1, f"one S3 credentials Secret expected: {s3_refs}"


def test_no_literal_secrets() -> None:
    for path in sorted(p for p in INFRA.rglob("*") if p.is_file()):
        text = path.read_text()
        assert not AWS_KEY_ID.search(text), f"{path}: an AWS access key id"
        assert not AWS_SECRET_LITERAL.search(text), f"{path}: an AWS secret access key"
    for name, doc in K8S_DOCS:
        for node in _walk(doc):
            if isinstance(node, dict) and "name" in node and ("value" in node or "valueFrom" in node):
                if SECRET_NAME.search(str(node["name"])):
                    assert "value" not in node, f"{name}: {node['name']} has a literal value"
                    assert "secretKeyRef" in node["valueFrom"], f"{name}: {node['name']} is not a secretKeyRef"
    for line in DOCKERFILE.read_text().splitlines():
        if re.match(r"\s*(ENV|ARG)\b", line):
            assert not SECRET_NAME.search(line), f"Dockerfile bakes a secret into the image: {line}"


def test_secret_scan_catches_literals() -> None:
    # The patterns above must match the real shapes (AWS's documented example credentials).
    assert AWS_KEY_ID.search("key: AKIAIOSFODNN7EXAMPLE")
    assert AWS_SECRET_LITERAL.search("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    assert SECRET_NAME.search("AWS_SECRET_ACCESS_KEY") and SECRET_NAME.search("RAY_AUTH_TOKEN")


# ------------------------------------------------------------------------------------------------- ray up


@pytest.mark.parametrize("path", RAY_UP_FILES, ids=lambda p: p.name)
def test_ray_up_config_is_valid_for_the_cluster_launcher(path: Path) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _load(path)[0]
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type"):
        assert key in raw, f"{path.name} lacks {key}"
    assert raw["provider"]["type"] == "aws" and raw["provider"]["region"]
    validate_config(prepare_config(raw))  # Ray's own schema and consistency checks

    types = raw["available_node_types"]
    assert raw["head_node_type"] in types
    workers = {k: v for k, v in types.items() if k != raw["head_node_type"]}
    assert any(re.match(r"(g|p)\d", v["node_config"]["InstanceType"]) for v in workers.values()), "no GPU workers"
    assert not re.match(r"(g|p)\d", types[raw["head_node_type"]]["node_config"]["InstanceType"]), "GPU head"

    (remote, local), = raw["file_mounts"].items()
    assert (REPO / local).resolve() == REPO, "file_mounts must copy the checkout (run ray up from the repo root)"
    setup = " && ".join(raw["setup_commands"])
    assert "pip install" in setup and "torch==" in setup and f"pip install {remote}" in setup
    assert any("ray start --head" in c for c in raw["head_start_ray_commands"])
    assert any("ray start --address=$RAY_HEAD_IP" in c for c in raw["worker_start_ray_commands"])


# ------------------------------------------------------------------------------------------------ Dockerfile


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs with comments dropped and continuation lines joined."""
    instructions, buffer = [], []
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        continued = line.endswith("\\")
        buffer.append(line.removesuffix("\\"))
        if not continued:
            keyword, _, rest = " ".join(buffer).partition(" ")
            instructions.append((keyword.upper(), " ".join(rest.split())))
            buffer = []
    assert not buffer, "the Dockerfile ends inside a continued line"
    return instructions


def test_dockerfile_installs_the_project_as_a_non_root_user() -> None:
    steps = _dockerfile_instructions()
    keywords = [k for k, _ in steps]
    assert steps[0][0] == "FROM" and re.match(r"(python:3\.11-slim|nvidia/cuda:\S+-runtime\S*)$", steps[0][1])
    assert ("WORKDIR", "/app") in steps
    assert any(k == "ARG" and a.startswith("TORCH_SPEC") for k, a in steps)

    runs = [(i, a) for i, (k, a) in enumerate(steps) if k == "RUN"]
    torch_step = next(i for i, a in runs if "pip install ${TORCH_SPEC}" in a)
    project_step = next(i for i, a in runs if re.search(r"pip install \.(\s|$)", a))
    assert torch_step < project_step

    copied = {}
    for i, (keyword, args) in enumerate(steps):
        if keyword == "COPY":
            *sources, _ = args.split()
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: not in the repo"
                copied[source.rstrip("/")] = i
    assert {"pipelines", "vad_models", "jobs", "configs", "pyproject.toml", "README.md"} <= set(copied)
    assert all(copied[s] < project_step for s in ("pipelines", "vad_models", "pyproject.toml", "README.md"))

    user_steps = [(i, a) for i, (k, a) in enumerate(steps) if k == "USER"]
    assert user_steps and user_steps[-1][1] not in ("root", "0"), "the image must not run as root"
    assert user_steps[-1][0] > max(i for i, k in enumerate(keywords) if k == "RUN")


def test_every_infra_file_is_documented() -> None:
    operations = (REPO / "docs" / "operations.md").read_text()
    for path in [DOCKERFILE, *K8S_FILES, *RAY_UP_FILES]:
        assert str(path.relative_to(REPO)) in operations, f"docs/operations.md does not mention {path.name}"
