"""``kubetrain k8s manifests``: valid for the API server, least privilege derived from the engine's code.

The first half reads what the Kubernetes engine asks of the API server from its source, as the RBAC the
master needs (``python -m tests.k8s.test_deploy_manifests`` prints it as rows for ``deploy.GRANTS``); the
second half checks the rendered manifests: strict schemas for the oldest and newest Kubernetes we support,
the Role equal to what the code calls, a config the master accepts, a restricted, probed, single master.

Why from the source: a Role written by hand drifts from the code the day someone adds a call; this reads
every kubernetes client method the engine's modules reference and turns it into what the API server's
authorizer checks, ``(apiGroup, resource, verb, cluster-wide?)``, so the test can demand that the rendered
Role grants exactly that.  The rules, in order:

1. **Which client classes**: those the engine constructs (``kubernetes.client.CoreV1Api(...)``); a name
   they are assigned to (``self.core = ...``, ``core = ...``) identifies the receiver of a method, which
   settles names two classes share (``list_namespaced_event`` is in CoreV1Api and EventsV1Api).
2. **Which methods**: every attribute reference whose name is a method of those classes (called, or passed
   on, e.g. ``self._call(self.core.list_node, ...)`` or ``{"jobs": self.batch.list_namespaced_job}``), or,
   for a class the engine is only handed (``CustomObjectsApi``), of any class of the client; so no method of
   ours may take a client method's name.
3. **Method -> request**: read from the generated client itself (each method's HTTP method and path), not
   from its name; a path is ``/api/v1/...`` (group "") or ``/apis/<group>/<version>/...``, then
   ``namespaces/{namespace}/`` when namespaced, the resource, ``{name}`` for one object, a subresource
   (``pods/{name}/log`` -> ``pods/log``).  Custom objects' ``{group}`` and ``{plural}`` are read from the
   call's arguments (string literals, or module constants of the engine).
4. **Request -> verb** (the authorizer's own mapping): GET of one object ``get``, of a collection ``list``
   (``watch`` when watching, below); POST ``create``; PUT ``update``; PATCH ``patch``; DELETE of one object
   ``delete``, of a collection ``deletecollection``.  No ``{namespace}`` in the path: cluster-wide.
5. **Watching**: a collection GET counts as ``watch`` where the reference is called with ``watch=True``,
   is an argument of a call given ``watch=True`` (a wrapper), or is passed to ``...stream(...)``
   (``kubernetes.watch.Watch().stream``); elsewhere it counts as ``list``.  A module that watches through a
   method it was handed (a reflector: ``self._call(namespace, watch=True, ...)``, the method being a list
   method given to its constructor) is a *watching module*: a call with ``watch=True`` or a ``Watch()``
   anywhere in it; each list method it references counts as ``list`` and ``watch`` (a reflector lists, then
   watches from the list's resourceVersion).
6. **Nothing hidden**: an error, not a guess, where the check cannot see the call: ``getattr`` with a name
   built from parts (``f"list_namespaced_{kind}"``) or with any computed name on a client; a raw
   ``call_api`` with a computed path; a custom object whose group or plural is not a literal or constant; a
   method two classes share on a receiver of unknown class.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import importlib.util
import inspect
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ENGINE_DIR = Path(__file__).resolve().parents[2] / "src" / "kubetrain" / "engines" / "kubernetes"


@dataclass(frozen=True, order=True)
class ApiCall:
    """What the authorizer checks for one request: the group, the resource (``pods/log``), the verb, the scope."""

    group: str
    resource: str
    verb: str
    cluster: bool


@dataclass(frozen=True)
class Found:
    call: ApiCall
    where: str  # file:line of the reference


class Unreadable(Exception):
    """The source hides a call from this check (see rule 6 of the module docstring)."""


_DEF = re.compile(r"^    def (_?\w+?)(_serialize|_with_http_info)\(", re.M)
_NEW = re.compile(r"method='([A-Z]+)',\s*resource_path='([^']+)'")  # client >= 29's generator
_OLD = re.compile(r"call_api\(\s*'([^']+)',\s*'([A-Z]+)'")  # older generators


@functools.cache
def api_index() -> tuple[dict[str, Path], dict[str, tuple[str, ...]]]:
    """The client's API classes (name -> source file) and, per public method name, the classes that have it.

    Read from the files, not imported: the client imports each class on first use, seconds for them all."""
    folder = Path(importlib.util.find_spec("kubernetes.client").origin).parent / "api"
    files: dict[str, Path] = {}
    by_name: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.py")):
        text = path.read_text()
        cls = re.search(r"^class (\w+)\b", text, re.M)
        if cls is None:
            continue
        files[cls.group(1)] = path
        for method in set(re.findall(r"^    def ([a-z]\w*?)(?:_with_http_info|_without_preload_content)?\(", text, re.M)):
            by_name.setdefault(method, []).append(cls.group(1))
    return files, {name: tuple(classes) for name, classes in by_name.items()}


@functools.cache
def client_methods(class_name: str) -> dict[str, tuple[str, str]]:
    """Method name -> (HTTP method, path) for one generated API class, read from its source file."""
    text = api_index()[0][class_name].read_text()
    table = {}
    starts = list(_DEF.finditer(text))
    for match, following in zip(starts, starts[1:] + [None]):
        body = text[match.end():following.start() if following else len(text)]
        new, old = _NEW.search(body), _OLD.search(body)
        if new:
            table[match.group(1).lstrip("_")] = (new.group(1), new.group(2))
        elif old:
            table[match.group(1)] = (old.group(2), old.group(1))
    return table


def _parent_map(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _target_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _constants(trees: dict[str, ast.Module]) -> dict[str, str]:
    """Module-level string constants of the engine (``KUEUE_GROUP = "kueue.x-k8s.io"``), by name."""
    out = {}
    for tree in trees.values():
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        out[target.id] = node.value.value
    return out


def _is_true(keywords: list[ast.keyword], name: str) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is True for k in keywords)


def derive(sources: dict[str, str]) -> list[Found]:
    """Every API request the given modules (name -> source) can make, with where each was found."""
    trees = {name: ast.parse(text, filename=name) for name, text in sources.items()}
    constants = _constants(trees)
    files, by_name = api_index()
    classes: set[str] = set()
    receivers: dict[str, str] = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                called = _target_name(node.func)
                if called in files:
                    classes.add(called)
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                called = _target_name(node.value.func)
                if called in files:
                    for target in node.targets:
                        if _target_name(target):
                            receivers[_target_name(target)] = called
    found: list[Found] = []
    for module, tree in trees.items():
        parents = _parent_map(tree)
        watches = any(isinstance(node, ast.Call) and (_is_true(node.keywords, "watch") or _target_name(node.func) == "Watch")
                      for node in ast.walk(tree))
        module_found: list[Found] = []
        for node in ast.walk(tree):
            _check_visible(node, module, receivers)
            if not isinstance(node, ast.Attribute):
                continue
            name = node.attr.removesuffix("_with_http_info")
            # The classes the engine constructs first; a class it is handed (CustomObjectsApi) still counts.
            owners = [cls for cls in by_name.get(name, ()) if cls in classes] or list(by_name.get(name, ()))
            requests = {client_methods(cls).get(name) for cls in owners} - {None}
            if not requests:
                continue
            if len(requests) > 1:
                owner = receivers.get(_target_name(node.value) or "")
                if owner not in owners:
                    raise Unreadable(f"{module}:{node.lineno}: {name} is a method of {owners}; assign the client "
                                     "to a name (self.core = CoreV1Api(...)) so the check can tell which")
                owners, requests = [owner], {client_methods(owner)[name]}
            (http, path), = requests
            call, position = _enclosing_call(node, parents)
            watched = call is not None and (_is_true(call.keywords, "watch")
                                            or (call.func is not node and _target_name(call.func) == "stream"))
            where = f"{module}:{node.lineno}"
            group, resource, named, cluster = _parse_path(path, call, position, constants, where, owners[0], name)
            module_found.append(Found(ApiCall(group, resource, _verb(http, named, watched), cluster), where))
        found += module_found
        if watches:  # rule 5: a watching module watches what it lists
            found += [Found(ApiCall(f.call.group, f.call.resource, "watch", f.call.cluster), f.where + " (watching module)")
                      for f in module_found if f.call.verb == "list"]
    return found


def _check_visible(node: ast.AST, module: str, receivers: dict[str, str]) -> None:
    if isinstance(node, ast.Call) and _target_name(node.func) == "getattr" and len(node.args) >= 2:
        built = isinstance(node.args[1], (ast.JoinedStr, ast.BinOp))  # f"list_namespaced_{kind}"
        if built or (not isinstance(node.args[1], ast.Constant) and _target_name(node.args[0]) in receivers):
            raise Unreadable(f"{module}:{node.lineno}: getattr with a computed name may hide an API call; name "
                             "the client method in the code")
    if isinstance(node, ast.Call) and _target_name(node.func) == "call_api":
        if not (node.args and isinstance(node.args[0], ast.Constant)):
            raise Unreadable(f"{module}:{node.lineno}: call_api with a computed path; use a typed client method")


def _enclosing_call(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> tuple[ast.Call | None, int]:
    """The call this reference is the function of (position -1) or a positional argument of (its index)."""
    parent = parents.get(node)
    if isinstance(parent, ast.Call):
        if parent.func is node:
            return parent, -1
        if node in parent.args:
            return parent, parent.args.index(node)
    return None, -1


def _argument(call: ast.Call | None, position: int, parameter: str, index: int,
              constants: dict[str, str], where: str) -> str:
    """The value of the method's ``parameter`` (its ``index``-th) at this call, a literal or a constant."""
    if call is None:
        raise Unreadable(f"{where}: a custom-object method referenced outside a call; its {parameter} is unknown")
    values = {k.arg: k.value for k in call.keywords}
    args = call.args[position + 1:]
    value = values.get(parameter, args[index] if index < len(args) else None)
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return value.value
    if isinstance(value, ast.Name) and value.id in constants:
        return constants[value.id]
    if isinstance(value, ast.Attribute) and value.attr in constants:
        return constants[value.attr]
    raise Unreadable(f"{where}: the {parameter} of a custom-object call must be a string literal or a module "
                     "constant of the engine, for the Role check to read it")


def _parse_path(path: str, call: ast.Call | None, position: int, constants: dict[str, str], where: str,
                owner: str, name: str) -> tuple[str, str, bool, bool]:
    parts = path.strip("/").split("/")
    if parts[0] == "api":
        group, rest = "", parts[2:]
    else:
        group, rest = parts[1], parts[3:]
    cluster = True
    if len(rest) >= 2 and rest[:2] == ["namespaces", "{namespace}"]:
        cluster, rest = False, rest[2:]
    resource, named = rest[0], len(rest) > 1
    if len(rest) > 2:
        resource += "/" + rest[2]
    if "{" in group or "{" in resource:
        client = importlib.import_module("kubernetes.client")
        signature = [p for p in inspect.signature(getattr(getattr(client, owner), name)).parameters
                     if p != "self"]
        if group == "{group}":
            group = _argument(call, position, "group", signature.index("group"), constants, where)
        if resource.startswith("{plural}"):
            plural = _argument(call, position, "plural", signature.index("plural"), constants, where)
            resource = plural + resource.removeprefix("{plural}")
    return group, resource, named, cluster


def _verb(http: str, named: bool, watched: bool) -> str:
    if http == "GET":
        return "get" if named else ("watch" if watched else "list")
    if http == "DELETE":
        return "delete" if named else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}[http]


def engine_sources() -> dict[str, str]:
    """The engine package's modules, by file name."""
    return {path.name: path.read_text() for path in sorted(ENGINE_DIR.glob("*.py"))}


def table() -> str:
    """The derived calls as rows for ``deploy.GRANTS`` (``python -m tests.k8s.api_calls``)."""
    grouped: dict[tuple[str, str, bool], set[str]] = {}
    for item in derive(engine_sources()):
        c = item.call
        grouped.setdefault((c.group, c.resource, c.cluster), set()).add(c.verb)
    return "\n".join(f"Grant({g!r}, {r!r}, {tuple(sorted(v))!r}, {c}, ...)," for (g, r, c), v in sorted(grouped.items()))


# == the tests ========================================================================================

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[test]'")

from kubetrain.engines.kubernetes.config import kubernetes_settings  # noqa: E402
from kubetrain.engines.kubernetes.manifests import KubernetesSettings  # noqa: E402
from kubetrain.engines.kubernetes.deploy import (  # noqa: E402
    GRANTS,
    DeployOptions,
    Manifest,
    master_env,
    render_manifests,
    to_yaml,
)
from kubetrain.server.guards import HEALTH_PATH  # noqa: E402
from kubetrain.settings import load_settings  # noqa: E402
from tests.k8s.test_gang_manifests import VERSIONS  # noqa: E402

#: The oldest and the newest Kubernetes the manifests are checked against (the engine's own list).
OLDEST_NEWEST = (VERSIONS[0], VERSIONS[-1])
CASES = {
    "sqlite-rwo": DeployOptions(namespace="ml"),
    "postgres-rwx": DeployOptions(namespace="team-a", postgres_url="postgresql+psycopg://kt:secret@db.example:5432/kt",
                                  storage_class="nfs-client", results_access_mode="ReadWriteMany",
                                  image="registry.example/kubetrain-master:0.1.0",
                                  job_image="registry.example/ml/train:1"),
}


def by_kind(manifests: list[Manifest]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for manifest in manifests:
        out.setdefault(manifest.body["kind"], []).append(manifest.body)
    return out


def only(manifests: list[Manifest], kind: str) -> dict:
    found = by_kind(manifests)[kind]
    assert len(found) == 1, f"{len(found)} {kind} documents"
    return found[0]


def granted(manifests: list[Manifest]) -> set[ApiCall]:
    """What the rendered Role and ClusterRole allow, one (group, resource, verb, scope) per entry."""
    out = set()
    for kind, cluster in (("Role", False), ("ClusterRole", True)):
        for rule in only(manifests, kind)["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    out |= {ApiCall(group, resource, verb, cluster) for verb in rule["verbs"]}
    return out


@pytest.mark.parametrize("version", OLDEST_NEWEST)
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_document_is_valid_for_the_api_server_strictly(case: str, version: str) -> None:
    documents = list(yaml.safe_load_all(to_yaml(render_manifests(CASES[case]))))
    assert {d["kind"] for d in documents} >= {"ServiceAccount", "Role", "RoleBinding", "ClusterRole",
                                              "ClusterRoleBinding", "ConfigMap", "PersistentVolumeClaim",
                                              "Deployment", "Service", "NetworkPolicy"}
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)


def mismatch(found: list[Found], manifests: list[Manifest]) -> tuple[list[tuple[ApiCall, list[str]]], list[ApiCall]]:
    """What the code calls that the rendered roles do not grant (with where), and what they grant beyond it."""
    calls = {f.call for f in found}
    have = granted(manifests)
    missing = [(c, sorted({f.where for f in found if f.call == c})) for c in sorted(calls - have)]
    return missing, sorted(have - calls)


def test_the_role_grants_exactly_what_the_engine_calls() -> None:
    """Nothing missing (the master would get 403s) and nothing more (least privilege), from the code as it is."""
    found = derive(engine_sources())
    missing, extra = mismatch(found, render_manifests(DeployOptions()))
    assert not missing, f"the engine calls what the Role does not grant: {missing}; add it to deploy.GRANTS " \
                        "(the derived rows: python -m tests.k8s.test_deploy_manifests)"
    assert not extra, f"the Role grants what the engine never calls: {extra}; drop it from deploy.GRANTS"
    # The engine's known calls are found at all (a derivation that reads nothing would pass the above).
    calls = {f.call for f in found}
    assert ApiCall("batch", "jobs", "create", False) in calls and ApiCall("", "nodes", "list", True) in calls


def test_grants_are_explicit_and_rendered_once() -> None:
    keys = [(g.group, g.resource, g.cluster) for g in GRANTS]
    assert len(keys) == len(set(keys)), "one row per resource and scope in deploy.GRANTS"
    for manifest in render_manifests(CASES["postgres-rwx"]):
        for rule in manifest.body.get("rules", []):
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
    binding = only(render_manifests(DeployOptions(namespace="ml")), "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kubetrain-master", "namespace": "ml"}]


def test_a_role_check_that_can_fail_does_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubetrain.engines.kubernetes import deploy

    found = derive(engine_sources())
    jobs = next(g for g in GRANTS if g.resource == "jobs")
    fewer = tuple(g if g is not jobs else dataclasses.replace(g, verbs=("create", "get", "list", "watch"))
                  for g in GRANTS)
    monkeypatch.setattr(deploy, "GRANTS", fewer)
    missing, extra = mismatch(found, render_manifests(DeployOptions()))
    assert [c for c, _ in missing] == [ApiCall("batch", "jobs", "delete", False)] and not extra
    monkeypatch.setattr(deploy, "GRANTS", GRANTS + (dataclasses.replace(jobs, resource="cronjobs"),))
    missing, extra = mismatch(found, render_manifests(DeployOptions()))
    assert not missing and {c.resource for c in extra} == {"cronjobs"}


SAMPLE = '''
import kubernetes
from kubernetes import watch
GROUP = "kueue.x-k8s.io"

class Engine:
    def __init__(self, api):
        self.core = kubernetes.client.CoreV1Api(api)
        self.batch = kubernetes.client.BatchV1Api(api)
        self.events = kubernetes.client.EventsV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)

    def run(self, ns):
        self._call(self.core.read_namespaced_pod_log, "p", ns, what="log")
        self.batch.patch_namespaced_job("j", ns, {})
        self.core.delete_collection_namespaced_secret(ns)
        self.core.list_pod_for_all_namespaces(watch=True)
        watch.Watch().stream(self.events.list_namespaced_event, ns)
        self._call(self.custom.list_namespaced_custom_object, GROUP, "v1beta1", ns, "workloads", what="x")
        self.custom.get_cluster_custom_object(group="metrics.k8s.io", version="v1beta1", plural="nodes", name="n")
'''


def test_the_derivation_rules_on_a_sample() -> None:
    calls = {f.call for f in derive({"sample.py": SAMPLE})}
    assert calls == {
        ApiCall("", "pods/log", "get", False),
        ApiCall("batch", "jobs", "patch", False),
        ApiCall("", "secrets", "deletecollection", False),
        ApiCall("", "pods", "watch", True),
        ApiCall("events.k8s.io", "events", "watch", False),
        ApiCall("kueue.x-k8s.io", "workloads", "list", False),
        ApiCall("metrics.k8s.io", "nodes", "get", True),
        # A watching module (watch=True above) watches what it lists.
        ApiCall("kueue.x-k8s.io", "workloads", "watch", False),
    }


def test_a_reflector_handed_its_list_method_counts_as_watching() -> None:
    source = '''
class Reflector:
    def __init__(self, call):
        self._call = call
    def watch(self, ns):
        return self._call(ns, watch=True, allow_watch_bookmarks=True)

def build(batch):
    return Reflector(batch.list_namespaced_job)
'''
    calls = {f.call for f in derive({"informer.py": source, "engine.py": "self.batch = kubernetes.client.BatchV1Api(a)"})}
    assert calls == {ApiCall("batch", "jobs", "list", False), ApiCall("batch", "jobs", "watch", False)}


@pytest.mark.parametrize("source", [
    "def f(core, kind):\n    return getattr(core, f'list_namespaced_{kind}')()",
    "import kubernetes\ncore = kubernetes.client.CoreV1Api()\ndef f(name):\n    return getattr(core, name)()",
    "def f(custom, group):\n    return custom.list_namespaced_custom_object(group, 'v1', 'ns', 'things')",
    "import kubernetes\ndef f(api):\n    return api.list_namespaced_event('ns')",  # CoreV1Api or EventsV1Api?
])
def test_a_call_the_check_cannot_read_is_an_error(source: str) -> None:
    with pytest.raises(Unreadable):
        derive({"hidden.py": source})


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_master_accepts_its_config_and_reaches_pods_at_the_service(case: str, tmp_path: Path) -> None:
    options = CASES[case]
    manifests = render_manifests(options)
    config = only(manifests, "ConfigMap")["data"]["config.yaml"]
    (tmp_path / "config.yaml").write_text(config)
    env = {e["name"]: e["value"] for e in master_env(options) if "value" in e}
    env.update(KUBETRAIN_HOME=str(tmp_path), KUBETRAIN_K8S_NAMESPACE=options.namespace, KUBETRAIN_TOKEN="t" * 32)
    if options.postgres_url:
        env["KUBETRAIN_DATABASE_URL"] = options.postgres_url
    settings = load_settings(env)
    k8s = kubernetes_settings(settings, env, master_url=None)
    assert settings.engine == "kubernetes" and settings.host == "0.0.0.0" and settings.token
    service = only(manifests, "Service")
    port = service["spec"]["ports"][0]["port"]
    assert k8s.master_url == f"http://{service['metadata']['name']}.{options.namespace}.svc:{port}" == options.master_url
    assert settings.port == port and k8s.namespace == options.namespace
    assert k8s.results_access_mode == options.results_access_mode
    assert k8s.results_storage_class == options.storage_class
    assert k8s.image == (options.job_image or KubernetesSettings.image)
    container = only(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert (k8s.results_mount_path in mounts) if options.mounts_results else k8s.results_mount_path is None


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_master_pod_is_least_privilege_single_and_probed(case: str) -> None:
    options = CASES[case]
    manifests = render_manifests(options)
    deployment = only(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == only(manifests, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["enableServiceLinks"] is False
    for container in pod["containers"] + pod["initContainers"]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert container["resources"]["requests"] == container["resources"]["limits"]
    master = pod["containers"][0]
    assert {master[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")} == {HEALTH_PATH}
    port = master["ports"][0]["containerPort"]
    policy = only(manifests, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"] and policy["ingress"] == [{"ports": [{"port": port, "protocol": "TCP"}]}]
    assert policy["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    claims = {c["metadata"]["name"]: c for c in by_kind(manifests)["PersistentVolumeClaim"]}
    assert claims["kubetrain-master"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert ("kubetrain-results" in claims) == options.mounts_results
    env = {e["name"]: e for e in master["env"]}
    if options.postgres_url:
        secret = only(manifests, "Secret")
        assert secret["stringData"] == {"url": options.postgres_url}
        assert env["KUBETRAIN_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"],
                                                                             "key": "url"}
    else:
        assert "Secret" not in by_kind(manifests) and "KUBETRAIN_DATABASE_URL" not in env
    assert "value" not in env["KUBETRAIN_TOKEN"], "the admin token comes from a Secret, never from this output"


def test_no_service_sets_a_variable_the_master_or_a_job_reads() -> None:
    """Kubernetes gives every pod ``<SERVICE>_PORT`` etc.; a Service named ``kubetrain`` would set KUBETRAIN_PORT."""
    read = set(re.findall(r"KUBETRAIN_[A-Z0-9_]+", "".join(p.read_text() for p in ENGINE_DIR.parents[1].rglob("*.py"))))
    for service in by_kind(render_manifests(DeployOptions()))["Service"]:
        prefix = service["metadata"]["name"].upper().replace("-", "_")
        injected = {f"{prefix}_SERVICE_HOST", f"{prefix}_SERVICE_PORT", f"{prefix}_PORT"}
        assert not injected & read, f"Service {service['metadata']['name']} would set {injected & read} in every pod"


if __name__ == "__main__":
    print(table())
