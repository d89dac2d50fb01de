"""Structural checks of terraform/ (offline: no provider registry here). terraform fmt and
checkov run in `make lint`; these check that the deployment matches the code."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import hcl2

from shared import openapi, routes

ROOT = Path(__file__).resolve().parents[2]
TF = ROOT / "terraform"


def unquote(value: Any) -> Any:
    """python-hcl2 keeps string literals quoted; strip that, recursively."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, dict):
        return {k: unquote(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unquote(v) for v in value]
    return value


def local(name: str) -> Any:
    for path in sorted(TF.glob("*.tf")):
        for block in hcl2.load(path.open()).get("locals", []):
            if name in block:
                return unquote(block[name])
    raise KeyError(name)


def deployed() -> dict[str, Any]:
    """The function table Terraform reads (terraform/functions.json)."""
    assert local("functions") == "${local.wiring.functions}"
    return dict(json.loads(openapi.FUNCTION_TABLE.read_text())["functions"])


def test_the_function_table_is_generated_from_the_route_table() -> None:
    committed = openapi.FUNCTION_TABLE.read_text()
    assert committed == openapi.render_function_table(), "stale: run `make openapi`"
    functions_tf = (TF / "functions.tf").read_text()
    assert 'jsondecode(file("${path.module}/functions.json"))' in functions_tf
    # The trigger blocks and the internal URLs take every fact from the table.
    for fact in ("each.value.event_type", "each.value.document", "each.value.topic"):
        assert fact in functions_tf
    assert "google_storage_bucket.this[each.value.bucket]" in functions_tf
    assert "local.wiring.paths.launch_job" in functions_tf
    assert "local.wiring.paths.relaunch_stale" in (TF / "project.tf").read_text()
    assert "/internal/" not in functions_tf + (TF / "project.tf").read_text()


def test_every_function_is_deployed_and_every_deployed_function_exists() -> None:
    table = deployed()
    on_disk = {p.parent.name for p in (ROOT / "functions").glob("*/main.py")}
    assert set(table) == on_disk == set(routes.all_functions()) == set(routes.DEPLOYMENTS)
    for t in routes.TRIGGERS:
        assert table[t.function]["kind"] == t.kind
        assert table[t.function]["event_type"] == t.event_type


def test_trigger_sources_name_what_exists() -> None:
    from shared import store
    from shared.config import load

    cfg = load({})
    table = deployed()
    project_tf = (TF / "project.tf").read_text()
    for t in routes.TRIGGERS:
        if t.kind == "firestore":  # the document pattern of a collection the store writes
            collection, _ = t.source.split("/", 1)
            assert t.source in (
                store.job_document("{jobId}"),
                f"{store.WEBHOOK_EVENTS}/{{eventId}}",
            )
            assert collection in (store.JOBS, store.WEBHOOK_EVENTS)
        elif t.kind == "pubsub":  # the topic config reads and Terraform creates
            assert f'name       = "{getattr(cfg, t.source)}"' in project_tf
        elif t.kind == "auth":  # the project's own Firebase Auth users: no source to name
            assert (
                t.source == ""
                and 'resource   = "projects/${var.project_id}"' in (TF / "functions.tf").read_text()
            )
        else:  # a bucket of terraform/storage.tf, the one config names
            assert table[t.function]["bucket"] in local("buckets")
            assert getattr(cfg, t.source) == f"{cfg.project_id}-{table[t.function]['bucket']}"


def test_every_public_route_has_a_gateway_operation_and_a_public_function() -> None:
    functions = deployed()
    doc = json.loads(openapi.render_gateway_config())
    for r in routes.ROUTES:
        kind = functions[r.function]["kind"]
        if r.internal:
            assert kind != "public" and r.path not in doc["paths"]
        else:
            assert kind == "public", r
            assert r.method.lower() in doc["paths"][r.path]
    gateway = (TF / "gateway.tf").read_text()
    assert 'templatefile("${path.module}/openapi.json.tftpl"' in gateway
    assert "create_before_destroy = true" in gateway


# Read by shared/config.py but never set in production: emulators and local-only stand-ins
# (config refuses them there), secrets (set from Secret Manager), and test-only overrides.
NOT_IN_PRODUCTION_ENV = {
    "YACHAY_TASKS_EMULATOR_HOST",
    "YACHAY_STRIPE_API_BASE",
    "YACHAY_SIGNING_KEY_FILE",
    "YACHAY_CATALOG_PATH",
    "YACHAY_STRIPE_SECRET_KEY",
    "YACHAY_STRIPE_WEBHOOK_SECRETS",
    "YACHAY_WEBHOOKS_ALLOW_LOOPBACK",
}


def test_every_variable_the_functions_read_is_set_by_terraform() -> None:
    source = (ROOT / "shared" / "config.py").read_text()
    read = set(re.findall(r'"(YACHAY_[A-Z_]+)"', source)) | {"GOOGLE_CLOUD_PROJECT"}
    env = set(local("common_env"))
    missing = read - env - NOT_IN_PRODUCTION_ENV
    assert not missing, f"set these in terraform/functions.tf common_env: {missing}"
    assert not env & {
        "FIRESTORE_EMULATOR_HOST",
        "FIREBASE_AUTH_EMULATOR_HOST",
        "STORAGE_EMULATOR_HOST",
        "PUBSUB_EMULATOR_HOST",
    }
    assert {s.env for s in routes.SECRETS} <= NOT_IN_PRODUCTION_ENV  # never in plain env


# Where each secret is read, by the operation whose function reads it: the table must give it
# to that function (least privilege is the table's other half: no function gets one unlisted).
SECRET_READERS = {
    "YACHAY_STRIPE_SECRET_KEY": {
        "getMe",  # the signed portal link (shared.links)
        "openBillingPortal",  # verifies it, then calls Stripe
        "createApiKey",  # the minted key's live/test prefix (shared.apikeys)
        "createJob",  # the card hold
        "launchJob",  # signs the trainer's report token
        "trainerReport",  # verifies it
        "stripeWebhook",
    },
    "YACHAY_STRIPE_WEBHOOK_SECRETS": {"stripeWebhook"},
}


def test_secrets_are_one_table_and_each_reader_is_given_its_secret() -> None:
    assert len({s.name for s in routes.SECRETS}) == len({s.env for s in routes.SECRETS}) == 2
    functions = {r.operation_id: r.function for r in routes.ROUTES}
    for s in routes.SECRETS:
        assert set(s.functions) <= set(routes.DEPLOYMENTS), s
        assert {functions[op] for op in SECRET_READERS[s.env]} <= set(s.functions), s.env
        assert s.local and not s.local.startswith(("sk_live_", "rk_live_"))  # test mode only
    table = json.loads(openapi.FUNCTION_TABLE.read_text())
    for name, f in table["functions"].items():
        assert f["secrets"] == routes.secrets_of(name)
    assert set(table["secrets"]) == {s.name for s in routes.SECRETS}
    functions_tf = (TF / "functions.tf").read_text()
    assert functions_tf.count("for_each = each.value.secrets") == 2  # gen2 and gen1
    assert "google_secret_manager_secret.this[secret_environment_variables.value]" in functions_tf
    assert "YACHAY_STRIPE" not in functions_tf  # no secret named outside the table


def test_the_secrets_kept_their_terraform_state_when_they_became_a_table() -> None:
    """Renaming a resource address without a `moved` block destroys it and creates a new,
    empty one: the secrets' versions (the live keys) and their grants would be gone."""
    moved = {
        m["from"].strip("${}"): m["to"].strip("${}")
        for path in TF.glob("*.tf")
        for m in hcl2.load(path.open()).get("moved", [])
    }
    old = "google_secret_manager_secret"
    for name in ("stripe-secret-key", "stripe-webhook-secrets"):
        assert moved[f'{old}.stripe["{name}"]'] == f'{old}.this["{name}"]'
    grants = json.loads(openapi.FUNCTION_TABLE.read_text())["secrets"]
    for sa in ("api", "charger", "eraser", "launcher", "webhook"):  # stripe_key's, by account
        assert moved[f'{old}_iam_member.stripe_key["{sa}"]'] == (
            f'{old}_iam_member.reader["stripe-secret-key/{sa}"]'
        )
        assert sa in grants["stripe-secret-key"]
    assert moved[f"{old}_iam_member.stripe_webhook_secrets"] == (
        f'{old}_iam_member.reader["stripe-webhook-secrets/webhook"]'
    )


def test_every_listing_query_has_its_composite_index() -> None:
    # shared/store._page (list_jobs, list_datasets): uid == X [and status == Y], newest first.
    needed = {("jobs", ("uid",)), ("jobs", ("uid", "status")), ("datasets", ("uid",))}
    declared = {(i["collection"], tuple(i["fields"])) for i in local("firestore_indexes").values()}
    assert needed <= declared
    project_tf = (TF / "project.tf").read_text()
    assert 'field_path = "created_at"\n    order      = "DESCENDING"' in project_tf
    # jobs.relaunch_stale: status == queued, created_at < t
    assert 'resource "google_firestore_index" "stale_queued"' in project_tf
    assert "relaunch-stale" in project_tf  # and Cloud Scheduler calls it


EXPECTED_ROLES = {
    "api": {
        "roles/datastore.user",
        "roles/cloudtasks.enqueuer",
        "${local.batch_job_stopper}",  # get and delete Batch jobs, never create
        "roles/firebaseauth.viewer",
        "roles/eventarc.eventReceiver",
    },
    # enqueues too: the sweep's relaunches and each webhook attempt's retry
    "launcher": {"roles/datastore.user", "roles/batch.jobsEditor", "roles/cloudtasks.enqueuer"},
    # no database role: it reports through the trainer-report route with its job's token
    "trainer": {"roles/batch.agentReporter", "roles/logging.logWriter"},
    "charger": {"roles/datastore.user", "roles/eventarc.eventReceiver"},
    "webhook": {"roles/datastore.user"},
    "notifier": {"roles/datastore.user", "roles/eventarc.eventReceiver"},
    "eraser": {"roles/datastore.user", "${local.batch_job_stopper}"},
    "tasks": set(),
    "gateway": set(),
}
EXPECTED_BUCKETS = {
    "api": {"models": "viewer", "datasets": "admin", "adapters": "admin"},
    # none: a trainer reads and writes through its job's downscoped token (shared.storage_grants)
    "notifier": {"adapters": "admin"},
    # what trainers need, since a downscoped token cannot exceed its source; the sweep reads too
    "launcher": {
        "models": "viewer",
        "datasets": "viewer",
        "adapters": "admin",
        "checkpoints": "admin",
    },
    "eraser": {"datasets": "admin", "adapters": "admin", "checkpoints": "admin"},
}


def test_service_accounts_have_exactly_the_roles_their_code_needs() -> None:
    roles = {sa: set(r) for sa, r in local("project_roles").items()}
    assert roles == EXPECTED_ROLES
    buckets = {
        sa: {b: r.removeprefix("roles/storage.object").lower() for b, r in m.items()}
        for sa, m in local("bucket_roles").items()
        if m
    }
    assert buckets == EXPECTED_BUCKETS
    assert not any("roles/owner" in r or "roles/editor" in r for r in roles.values())
    everything = "".join(p.read_text() for p in TF.glob("*.tf"))
    assert not re.search(r"member\s*=\s*\"all(Authenticated)?Users\"", everything)


def test_only_the_launcher_creates_batch_jobs() -> None:
    assert local("batch_job_stopper").endswith("/roles/yachayBatchJobStopper")
    iam = (TF / "iam.tf").read_text()
    assert 'permissions = ["batch.jobs.get", "batch.jobs.delete"]' in iam
    creators = {
        sa for sa, roles in local("project_roles").items() if "roles/batch.jobsEditor" in roles
    }
    assert creators == {"launcher"}


def test_internal_functions_are_not_reachable_from_the_internet() -> None:
    functions_tf = (TF / "functions.tf").read_text()
    assert 'each.value.kind == "public" ? "ALLOW_ALL" : "ALLOW_INTERNAL_ONLY"' in functions_tf
    kinds = {name: f["kind"] for name, f in deployed().items()}
    assert kinds["worker"] == "tasks" and kinds["charge_job"] == "firestore"


def test_every_account_that_enqueues_tasks_may_send_them_as_the_tasks_identity() -> None:
    """Cloud Tasks mints each task's OIDC token as the tasks account, which the enqueuer must be
    allowed to act as: an enqueuer without it fails in production only."""
    iam = (TF / "iam.tf").read_text()
    enqueuers = {r for r, roles in EXPECTED_ROLES.items() if "roles/cloudtasks.enqueuer" in roles}
    for role in enqueuers:
        assert re.search(
            r'service_account_id = google_service_account\.role\["tasks"\]\.name\s+'
            r'role\s+= "roles/iam\.serviceAccountUser"\s+'
            rf'member\s+= "serviceAccount:\$\{{google_service_account\.role\["{role}"\]\.email\}}"',
            iam,
        ), role


def test_launches_webhook_deliveries_and_token_counts_have_a_cloud_tasks_queue_each() -> None:
    queues = {}
    for path in sorted(TF.glob("*.tf")):
        for block in unquote(hcl2.load(path.open()).get("resource", [])):
            for kind, resources in block.items():
                if unquote(kind) == "google_cloud_tasks_queue":
                    for name, body in resources.items():
                        queues[unquote(name)] = unquote(body)["name"]
    assert queues == {
        "launch": "launch-jobs",
        "webhooks": "webhook-deliveries",
        "counts": "token-counts",
    }
    env = (TF / "functions.tf").read_text()
    for variable, queue in (
        ("YACHAY_COUNTS_QUEUE", "counts"),
        ("YACHAY_TASKS_QUEUE", "launch"),
        ("YACHAY_WEBHOOKS_QUEUE", "webhooks"),
    ):
        assert re.search(rf"{variable} += google_cloud_tasks_queue\.{queue}\.id", env), variable
