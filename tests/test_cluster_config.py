"""ray_cluster.yaml is a valid Ray cluster-launcher config that installs ray-rooms and
starts the gateway: checked against the JSON schema that ships inside the installed ray
package (``ray/autoscaler/ray-schema.json``) and by Ray's own preparation and
validation (what ``ray up`` runs before touching any machine)."""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG_PATH = ROOT / "ray_cluster.yaml"
AWS_PREFIX = "#aws "


@pytest.fixture(scope="module")
def schema() -> dict:
    import ray

    path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    assert path.is_file(), path
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def text() -> str:
    return CONFIG_PATH.read_text()


@pytest.fixture(scope="module")
def config(text) -> dict:
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def aws_config(text, config) -> dict:
    """The AWS variant the comments describe: the ``#aws`` lines replace the local
    provider's ``provider``, ``auth`` and ``max_workers``."""
    lines = [line[len(AWS_PREFIX):] for line in text.splitlines()
             if line.startswith(AWS_PREFIX)]
    assert lines, "the AWS alternative is missing"
    variant = copy.deepcopy(config)
    variant.update(yaml.safe_load("\n".join(lines)))
    return variant


def _validator(schema):
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_schema_is_the_draft_it_says(schema):
    assert schema["$schema"].startswith("http://json-schema.org/draft-07")
    assert schema["additionalProperties"] is False  # unknown top-level keys are errors


@pytest.mark.parametrize("variant", ["local", "aws"])
def test_config_validates_against_rays_schema(schema, config, aws_config, variant):
    cfg = config if variant == "local" else aws_config
    errors = sorted(_validator(schema).iter_errors(cfg), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    assert cfg["provider"]["type"] == variant


@pytest.mark.parametrize("variant", ["local", "aws"])
def test_ray_up_preparation_accepts_it(config, aws_config, variant):
    """``ray up`` fills in the provider's defaults, then validates; both must pass."""
    from actors.seam import validate_cluster_config

    prepared = validate_cluster_config(config if variant == "local" else aws_config)
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_schema_rejects_a_broken_copy(schema, config):
    """The check above can fail: a misspelt key or a wrong type is caught."""
    broken = copy.deepcopy(config)
    broken["setup_command"] = broken.pop("setup_commands")
    assert list(_validator(schema).iter_errors(broken))
    broken = copy.deepcopy(config)
    broken["provider"]["worker_ips"] = "10.0.0.11"
    assert list(_validator(schema).iter_errors(broken))


def test_nodes_install_this_package(config):
    mounts = {str(k): str(v) for k, v in config["file_mounts"].items()}
    remote = next(r for r, local in mounts.items() if local in (".", "./"))
    # the directory `ray up` runs from (this repository) is ray-rooms
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^name = "ray-rooms"$', pyproject, re.M)
    installs = [c for c in config["setup_commands"] if "pip install" in c]
    assert any(shlex.split(c)[-1] == remote for c in installs), installs
    assert ".git" in config["rsync_exclude"]


def test_head_starts_ray_then_deploys_the_serve_config(config):
    """No long-lived driver: the head deploys deploy/serve.yaml (one gateway replica per
    node, the scheduler and the pools owned by the application); every node offers its
    room slots."""
    commands = config["head_start_ray_commands"]
    ray_start = next(i for i, c in enumerate(commands) if "ray start --head" in c)
    serve = next(i for i, c in enumerate(commands) if "serve deploy" in c)
    assert ray_start < serve
    assert commands[serve].rstrip().endswith("serve deploy ~/ray-rooms/deploy/serve.yaml")
    assert '--resources="$(rooms slots)"' in commands[ray_start]
    worker = " ".join(config["worker_start_ray_commands"])
    assert "ray start --address=$RAY_HEAD_IP:6379" in worker
    assert '--resources="$(rooms slots)"' in worker
    serve_yaml = yaml.safe_load((ROOT / "deploy" / "serve.yaml").read_text())
    [app] = serve_yaml["applications"]
    assert app["args"]["max_replicas_per_node"] == 1
    assert app["args"]["replicas"] == 1 + config["max_workers"]  # one per node


def test_secrets_come_from_a_file_not_from_the_config(config, text):
    env_file = "~/.config/ray-rooms/env"
    assert config["file_mounts"][env_file] == env_file
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in command or "serve deploy" in command:
            assert f". {env_file}" in command, command
    for secret in ("ROOMS_TOKEN_SECRET", "CALLS_APP_SECRET", "OPENAI_API_KEY"):
        assert not re.search(rf"^\s*{secret}\s*[:=]\s*[^.\s]", text, re.M), secret
    assert not re.search(r"sk-[A-Za-z0-9]{8,}", text)
