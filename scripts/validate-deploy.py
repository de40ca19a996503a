"""Offline checks of the Kubernetes manifests in deploy/, run by scripts/validate-deploy.sh.

For the kustomization in deploy/ and for each overlay that deploy/README.md shows (a yaml block
whose first line is `# <dir>/kustomization.yaml`, set beside deploy/):
- render it with kustomize, and with kubectl's own kustomize when kubectl is installed: the two
  must agree and kubectl must not warn (deprecated fields);
- validate every object against the Kubernetes API schemas of the oldest supported and the
  newest known Kubernetes, strictly: an unknown field or kind is an error;
- check what the schemas cannot: every Secret, ConfigMap, key, ServiceAccount, volume, named
  port and Service selector that an object refers to exists in the rendering;
- check every shell script a container or probe runs with shellcheck;
- check the proxy's configuration as its container gets it: the file at its --config path, in
  the mounted ConfigMap, with `rwsplit check`, and with exactly the container's environment
  variables set (dummy values for Secrets), so that a password_env naming a variable the
  Deployment does not set fails here.
Prints nothing when all is well; otherwise every problem, and exits with 1.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml
from kubernetes_validate import utils as schemas

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
# The rwsplit Deployment's preStop hook sleeps with the kubelet's own sleep action, which is
# on by default from Kubernetes 1.30.
OLDEST_KUBERNETES = "1.30"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


class Report:
    """Problems found so far, each with the rendering and object it concerns."""

    def __init__(self):
        self.problems = []

    def add(self, where, message):
        self.problems.append(f"{where}: {message}")


def run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, **kwargs)


def render(kustomize, directory, label, report):
    """The objects kustomize makes of `directory`, or None when it fails."""
    built = run([kustomize, "build", str(directory)])
    if built.returncode != 0:
        report.add(label, f"kustomize build failed:\n{built.stderr.strip()}")
        return None
    objects = [o for o in yaml.safe_load_all(built.stdout) if o]
    if shutil.which("kubectl"):
        theirs = run(["kubectl", "kustomize", str(directory)])
        if theirs.returncode != 0 or theirs.stderr.strip():
            report.add(label, f"kubectl kustomize failed or warned:\n{theirs.stderr.strip()}")
        elif [o for o in yaml.safe_load_all(theirs.stdout) if o] != objects:
            report.add(label, "kubectl kustomize renders it differently from kustomize")
    return objects


def name_of(obj):
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def validate_schemas(objects, label, report):
    for version in (OLDEST_KUBERNETES, schemas.latest_version()):
        for obj in objects:
            where = f"{label}: {name_of(obj)} (Kubernetes {schemas.major_minor(version)})"
            try:
                schemas.validate(obj, version, strict=True)
            except schemas.ValidationError as e:
                path = ".".join(str(p) for p in e.path) or "(top)"
                report.add(where, f"{path}: {e.message}")
            except schemas.SchemaNotFoundError as e:
                report.add(where, e.message)


def pod_spec(obj):
    if obj.get("kind") not in WORKLOADS:
        return None
    return obj.get("spec", {}).get("template", {}).get("spec")


def pod_labels(obj):
    return obj.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})


def containers(spec):
    return spec.get("initContainers", []) + spec.get("containers", [])


def keys_of(obj):
    """The keys of a ConfigMap or Secret."""
    keys = set()
    for field in ("data", "binaryData", "stringData"):
        keys |= set((obj.get(field) or {}).keys())
    return keys


def check_references(objects, label, report):
    by_kind = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj

    def lookup(kind, name, key, where, optional=False):
        found = by_kind.get(kind, {}).get(name)
        if found is None:
            if not optional:
                report.add(where, f"{kind} {name} is not in the rendering")
        elif key is not None and key not in keys_of(found):
            report.add(where, f"{kind} {name} has no key {key}")

    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        where = f"{label}: {name_of(obj)}"
        account = spec.get("serviceAccountName")
        if account:
            lookup("ServiceAccount", account, None, where)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in obj["spec"].get("volumeClaimTemplates", [])}
        for volume in volumes.values():
            for kind, field, name_field in (
                ("ConfigMap", "configMap", "name"),
                ("Secret", "secret", "secretName"),
            ):
                source = volume.get(field)
                if source:
                    for item in source.get("items", [None]):
                        key = item["key"] if item else None
                        lookup(kind, source[name_field], key, where, source.get("optional"))
        if obj["kind"] == "StatefulSet":
            lookup("Service", obj["spec"]["serviceName"], None, where)
        for container in containers(spec):
            at = f"{where} container {container['name']}"
            for env in container.get("env", []):
                source = env.get("valueFrom", {})
                for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                    ref = source.get(field)
                    if ref:
                        lookup(kind, ref["name"], ref["key"], at, ref.get("optional"))
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volumes and mount["name"] not in claims:
                    report.add(at, f"mounts volume {mount['name']}, which the pod does not have")
            ports = {p.get("name") for p in container.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                for handler in ("httpGet", "tcpSocket", "grpc"):
                    port = (container.get(probe) or {}).get(handler, {}).get("port")
                    if isinstance(port, str) and port not in ports:
                        report.add(at, f"{probe} uses port {port}, which the container does not name")

    def selected(selector):
        return [
            w for w in objects
            if pod_spec(w) is not None
            and all(pod_labels(w).get(k) == v for k, v in selector.items())
        ]

    for service in by_kind.get("Service", {}).values():
        selector = service["spec"].get("selector")
        if not selector:
            continue
        where = f"{label}: {name_of(service)}"
        chosen = selected(selector)
        if not chosen:
            report.add(where, f"selector {selector} matches no pod template")
        names = {
            p.get("name")
            for w in chosen for c in pod_spec(w).get("containers", []) for p in c.get("ports", [])
        }
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort")
            if chosen and isinstance(target, str) and target not in names:
                report.add(where, f"targetPort {target} is not a port the selected pods name")
    for budget in by_kind.get("PodDisruptionBudget", {}).values():
        selector = budget["spec"]["selector"].get("matchLabels", {})
        if not selected(selector):
            report.add(f"{label}: {name_of(budget)}", f"selector {selector} matches no pod template")
    for binding in by_kind.get("RoleBinding", {}).values():
        where = f"{label}: {name_of(binding)}"
        lookup(binding["roleRef"]["kind"], binding["roleRef"]["name"], None, where)
        for subject in binding.get("subjects", []):
            if subject["kind"] == "ServiceAccount" and not subject.get("namespace"):
                lookup("ServiceAccount", subject["name"], None, where)


def check_scripts(objects, label, report, scratch):
    """shellcheck on every `bash -c` / `sh -c` script of a container or an exec probe."""
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        for container in containers(spec):
            commands = {"command": container.get("command")}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                commands[probe] = (container.get(probe) or {}).get("exec", {}).get("command")
            for what, command in commands.items():
                if not command or len(command) < 3 or command[0] not in ("bash", "sh") \
                        or command[1] != "-c":
                    continue
                script = Path(scratch) / "script"
                script.write_text(command[2])
                checked = run(["shellcheck", "--shell", command[0], "--format", "gcc", str(script)])
                if checked.returncode != 0:
                    found = checked.stdout.replace(f"{script}:", "line ").strip()
                    report.add(f"{label}: {name_of(obj)} container {container['name']} {what}",
                               f"shellcheck:\n{found}")


def env_names(config):
    """The environment variables a configuration reads (every `*_env` key's value)."""
    if isinstance(config, dict):
        for key, value in config.items():
            if key.endswith("_env") and isinstance(value, str):
                yield value
            else:
                yield from env_names(value)
    elif isinstance(config, list):
        for item in config:
            yield from env_names(item)


def check_proxy_config(objects, label, report, rwsplit, scratch, seen):
    """`rwsplit check` on the configuration file each rwsplit container is given; `seen` holds
    the (file, environment) pairs checked already, as overlays mostly repeat the base's."""
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec.get("containers", []):
            args = container.get("command", []) + container.get("args", [])
            if "--config" not in args[:-1]:
                continue
            where = f"{label}: {name_of(obj)} container {container['name']}"
            path = args[args.index("--config") + 1]
            text = None
            for mount in container.get("volumeMounts", []):
                source = volumes.get(mount["name"], {}).get("configMap")
                if source and os.path.dirname(path) == mount["mountPath"].rstrip("/"):
                    found = by_name.get(("ConfigMap", source["name"]), {})
                    text = (found.get("data") or {}).get(os.path.basename(path))
            if text is None:
                report.add(where, f"--config {path} is not a key of a ConfigMap mounted there")
                continue
            env = {"PATH": os.environ.get("PATH", "")}
            for variable in container.get("env", []):
                env[variable["name"]] = variable.get("value", f"dummy-{variable['name']}")
            try:
                wanted = set(env_names(tomllib.loads(text)))
            except tomllib.TOMLDecodeError as e:
                report.add(where, f"{path} is not valid TOML: {e}")
                continue
            for missing in sorted(wanted - env.keys()):
                report.add(where, f"{path} reads ${missing}, which the container does not set")
            if (text, frozenset(env)) in seen:
                continue
            seen.add((text, frozenset(env)))
            config = Path(scratch) / "rwsplit.toml"
            config.write_text(text)
            checked = run([rwsplit, "check", "--config", str(config)], env=env)
            if checked.returncode != 0:
                output = (checked.stderr + checked.stdout).replace(str(config), path).strip()
                report.add(where, f"rwsplit check rejects {path}:\n{output}")


def readme_overlays(scratch):
    """The overlays deploy/README.md shows, written beside a link to deploy/."""
    text = (DEPLOY / "README.md").read_text()
    base = Path(scratch) / "overlays"
    base.mkdir()
    (base / "deploy").symlink_to(DEPLOY)
    overlays = []
    for block in re.findall(r"^```yaml\n(.*?)^```", text, re.S | re.M):
        first = re.match(r"# (\S+)/kustomization\.yaml", block)
        if first:
            directory = base / first.group(1)
            directory.mkdir()
            (directory / "kustomization.yaml").write_text(block)
            overlays.append((f"README overlay {first.group(1)}", directory))
    return overlays


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kustomize", required=True)
    parser.add_argument("--rwsplit", required=True, help="the rwsplit binary")
    options = parser.parse_args()
    report = Report()
    seen = set()
    with tempfile.TemporaryDirectory() as scratch:
        for label, directory in [("deploy/", DEPLOY)] + readme_overlays(scratch):
            objects = render(options.kustomize, directory, label, report)
            if objects is None:
                continue
            validate_schemas(objects, label, report)
            check_references(objects, label, report)
            check_scripts(objects, label, report, scratch)
            check_proxy_config(objects, label, report, options.rwsplit, scratch, seen)
    for problem in report.problems:
        print(f"validate-deploy: {problem}", file=sys.stderr)
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
