"""deploy/kubernetes/: valid Kubernetes objects that run syncd the way syncd expects.

No cluster is needed.  Every manifest is validated strictly (an unknown field is
an error) against the API schemas the kubernetes-validate package ships, for
the oldest and the newest Kubernetes version checked, then held against syncd
itself: its settings, its HTTP routes and the image the Dockerfile builds.
"""

from __future__ import annotations

import copy
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any, cast

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from syncd.config import Settings
from syncd.models import Source
from syncd.storage import Store
from syncd.web import create_app
from tests.test_container_files import args_of, final_stage, settings_env_names

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
# The oldest Kubernetes release still common in clusters, and the newest the schemas know.
KUBERNETES_VERSIONS = ["1.30", latest_version()]
SECRET = "syncd"


# --------------------------------------------------------------------------- helpers


def documents() -> list[tuple[str, dict[str, Any]]]:
    """(file name, object) for every document of every manifest file."""
    found = []
    for path in sorted(MANIFESTS.glob("*.y*ml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document:
                found.append((path.name, document))
    return found


def only(kind: str) -> dict[str, Any]:
    matches = [obj for _, obj in documents() if obj["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]


def pod_spec(kind: str) -> dict[str, Any]:
    return cast(dict[str, Any], only(kind)["spec"]["template"]["spec"])


def container(kind: str) -> dict[str, Any]:
    containers = pod_spec(kind)["containers"]
    assert len(containers) == 1
    return cast(dict[str, Any], containers[0])


def env(kind: str) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container(kind).get("env", [])}


def mounted_file(kind: str, path: str) -> tuple[str, str]:
    """(Secret name, key) that the file at `path` in the container comes from."""
    volumes = {v["name"]: v for v in pod_spec(kind)["volumes"]}
    for mount in container(kind)["volumeMounts"]:
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            assert mount.get("readOnly") is True, f"{mount['name']} should be mounted read-only"
            secret = volumes[mount["name"]]["secret"]
            relative = path.removeprefix(prefix)
            keys = [item["key"] for item in secret["items"] if item["path"] == relative]
            assert keys, f"{path}: no item of Secret {secret['secretName']} is mounted there"
            return secret["secretName"], keys[0]
    raise AssertionError(f"{path} is not under any volume mount")


def http_port() -> int:
    return cast(int, Settings.model_fields["http_port"].default)


def image_user() -> str:
    return args_of(final_stage(), "USER")[-1].split(":")[0]


def validate(obj: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


# --------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_for_kubernetes(version: str) -> None:
    """Each object validates, unknown fields rejected, against that version's API schemas;
    an object with no schema (a misspelt kind or apiVersion) fails too."""
    for name, obj in documents():
        try:
            validate(obj, version)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(map(str, exc.path))
            pytest.fail(f"{name}: {obj['kind']} {where}: {exc.message}")


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: d["spec"]["template"]["spec"]["containers"][0].update(
            livenesProbe=d["spec"]["template"]["spec"]["containers"][0].pop("livenessProbe")
        ),
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(
            containerPort="8080"
        ),
        lambda d: d["spec"]["template"]["spec"]["securityContext"].update(runAsNonRoot="yes"),
    ],
    ids=["misspelt-field", "port-as-string", "bool-as-string"],
)
def test_the_schemas_reject_a_broken_deployment(break_it: Any) -> None:
    """The validation above is strict enough to mean something."""
    broken = copy.deepcopy(only("Deployment"))
    break_it(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken, latest_version())


def test_the_set_is_a_deployment_a_migrate_job_a_service_and_their_serviceaccount() -> None:
    """One of each, and nothing else: in particular no Secret, which applying the directory
    would overwrite the real one with."""
    kinds = sorted(obj["kind"] for _, obj in documents())
    assert kinds == ["Deployment", "Job", "Service", "ServiceAccount"]
    account = only("ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    for kind in ("Deployment", "Job"):
        spec = pod_spec(kind)
        assert spec["serviceAccountName"] == account["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False


# --------------------------------------------------------------------------- the daemon


def test_the_deployment_runs_the_daemon_and_the_job_runs_the_migration() -> None:
    """`syncd run` in the Deployment; `syncd migrate` in a Job that is not restarted in place."""
    daemon, migrate = container("Deployment"), container("Job")
    assert daemon["command"] + daemon["args"] == ["syncd", "run"]
    assert migrate["command"] + migrate["args"] == ["syncd", "migrate"]
    job = only("Job")["spec"]
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    assert 1 <= job["backoffLimit"] <= 10
    assert job["activeDeadlineSeconds"] >= 300
    assert "ttlSecondsAfterFinished" in job, "a finished Job blocks applying a new image"


def test_probes_hit_syncds_health_routes_on_its_http_port() -> None:
    """liveness GET /healthz, readiness and startup GET /readyz, on the named port that is
    syncd's default SYNCD_HTTP_PORT; both routes are really served by syncd.web."""
    daemon = container("Deployment")
    ports = {port["name"]: port["containerPort"] for port in daemon["ports"]}
    assert ports == {"http": http_port()}
    assert "SYNCD_HTTP_PORT" not in env("Deployment"), "the port numbers would need changing too"
    paths = {
        probe: (daemon[probe]["httpGet"]["path"], daemon[probe]["httpGet"]["port"])
        for probe in ("livenessProbe", "readinessProbe", "startupProbe")
    }
    assert paths == {
        "livenessProbe": ("/healthz", "http"),
        "readinessProbe": ("/readyz", "http"),
        "startupProbe": ("/readyz", "http"),
    }
    app = create_app(cast(Store, None), Settings(_env_file=None), list(Source))  # type: ignore[call-arg]
    served = {r.resource.canonical for r in app.router.routes() if r.method == "GET" and r.resource}
    assert {"/healthz", "/readyz", "/metrics"} <= served


def test_the_startup_probe_outlasts_a_first_backfill_and_liveness_stays_quick() -> None:
    """Until the first successful sync (a backfill may take hours) the pod is starting and
    cannot be killed by liveness; after it, a hung process is restarted within minutes."""
    daemon = container("Deployment")

    def budget_s(probe: str) -> int:
        spec = daemon[probe]
        return cast(int, spec["periodSeconds"] * spec["failureThreshold"])

    assert budget_s("startupProbe") >= 24 * 3600
    assert budget_s("livenessProbe") <= 120
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert daemon[probe]["timeoutSeconds"] >= 2, "/readyz queries the database"


def test_the_deployment_stops_gracefully() -> None:
    """As long to finish after SIGTERM as docker-compose.yml gives it (30 s)."""
    assert pod_spec("Deployment")["terminationGracePeriodSeconds"] >= 30


# --------------------------------------------------------------------------- secrets


def test_the_api_key_and_database_url_are_files_from_the_secret() -> None:
    """SYNCD_API_KEY_FILE and SYNCD_DATABASE_URL_FILE point into the read-only mount of the
    Secret's api-key and database-url; no secret is passed as an environment variable."""
    variables = env("Deployment")
    assert mounted_file("Deployment", variables["SYNCD_API_KEY_FILE"]["value"]) == (
        SECRET,
        "api-key",
    )
    assert mounted_file("Deployment", variables["SYNCD_DATABASE_URL_FILE"]["value"]) == (
        SECRET,
        "database-url",
    )
    for kind in ("Deployment", "Job"):
        assert not {"SYNCD_API_KEY", "SYNCD_DATABASE_URL"} & env(kind).keys()
        assert all("valueFrom" not in entry for entry in env(kind).values())


def test_the_migrate_job_gets_the_database_url_and_not_the_api_key() -> None:
    """The migration needs the database only: the API key is not even mounted."""
    variables = env("Job")
    assert mounted_file("Job", variables["SYNCD_DATABASE_URL_FILE"]["value"]) == (
        SECRET,
        "database-url",
    )
    assert "SYNCD_API_KEY_FILE" not in variables
    mounted_keys = {
        item["key"]
        for volume in pod_spec("Job")["volumes"]
        if "secret" in volume
        for item in volume["secret"]["items"]
    }
    assert mounted_keys == {"database-url"}


def test_secret_files_are_readable_by_the_pods_group_only() -> None:
    """Mode 0440 with fsGroup 10001: uid 10001 reads them through its group; others cannot."""
    for kind in ("Deployment", "Job"):
        spec = pod_spec(kind)
        for volume in spec["volumes"]:
            if "secret" in volume:
                assert volume["secret"]["defaultMode"] == 0o440
        assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"]


def test_the_readme_creates_the_secret_the_manifests_read() -> None:
    """deploy/kubernetes/README.md's `kubectl create secret` has exactly the keys mounted."""
    readme = (MANIFESTS / "README.md").read_text(encoding="utf-8")
    match = re.search(r"kubectl create secret generic (.+?)\n\s*```", readme, re.DOTALL)
    assert match, "README.md shows no `kubectl create secret generic` command"
    words = shlex.split(match.group(1).replace("\\\n", " "))
    assert words[0] == SECRET
    created = {w.split("=", 1)[1].split("=")[0] for w in words[1:] if w.startswith("--from-")}
    used = {
        item["key"]
        for kind in ("Deployment", "Job")
        for volume in pod_spec(kind)["volumes"]
        if "secret" in volume
        for item in volume["secret"]["items"]
    }
    assert created == used == {"api-key", "database-url"}


# --------------------------------------------------------------------------- environment


def test_every_syncd_variable_set_is_a_setting_syncd_reads() -> None:
    """No misspelt SYNCD_* name that syncd would silently ignore."""
    names = settings_env_names()
    for kind in ("Deployment", "Job"):
        unknown = sorted(n for n in env(kind) if n.startswith("SYNCD_") and n not in names)
        assert unknown == [], kind


def test_no_service_link_variables_reach_syncd() -> None:
    """With service links Kubernetes sets <SERVICE>_SERVICE_HOST, <SERVICE>_PORT… in every pod
    of the namespace; syncd reads SYNCD_*, so they are off, and the Service's would not
    collide with a setting anyway."""
    for kind in ("Deployment", "Job"):
        assert pod_spec(kind)["enableServiceLinks"] is False
    service = only("Service")
    prefix = service["metadata"]["name"].upper().replace("-", "_")
    links = {f"{prefix}_SERVICE_HOST", f"{prefix}_SERVICE_PORT", f"{prefix}_PORT"}
    for port in service["spec"]["ports"]:
        links.add(f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}")
        links.add(f"{prefix}_PORT_{port['port']}_TCP")
    assert links & settings_env_names().keys() == set()


# --------------------------------------------------------------------------- pod security


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_pods_run_as_the_images_non_root_user_with_nothing_extra(kind: str) -> None:
    """runAsNonRoot with the image's uid (10001), no privilege escalation, no capabilities,
    a read-only root filesystem and the runtime's default seccomp profile."""
    pod = pod_spec(kind)["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert str(pod["runAsUser"]) == image_user() == "10001"
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    box = container(kind)["securityContext"]
    assert box["allowPrivilegeEscalation"] is False
    assert box["readOnlyRootFilesystem"] is True
    assert box["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in box and "runAsUser" not in box


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_containers_request_resources_and_cap_memory(kind: str) -> None:
    """Requests for scheduling, and a memory limit above the request."""
    resources = container(kind)["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert "memory" in resources["limits"]


def test_both_run_this_releases_image() -> None:
    """The same image in the Deployment and the Job, tagged with pyproject's version."""
    images = {container(kind)["image"] for kind in ("Deployment", "Job")}
    assert len(images) == 1
    assert images.pop().rsplit(":", 1)[1] == PROJECT["version"]


# --------------------------------------------------------------------------- the Service


def test_the_metrics_service_reaches_the_daemon_pods_only() -> None:
    """Its selector matches the Deployment's pods but not the migrate Job's, its port is
    syncd's HTTP port by name, and not-ready pods stay scrapeable."""
    service = only("Service")["spec"]
    selector = service["selector"].items()
    deployment = only("Deployment")
    assert selector <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= selector
    assert not selector <= only("Job")["spec"]["template"]["metadata"]["labels"].items()
    assert service["ports"] == [
        {"name": "http", "port": http_port(), "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["publishNotReadyAddresses"] is True
    annotations = only("Service")["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(http_port())
    assert annotations["prometheus.io/path"] == "/metrics"
