# One service account per role, each with only what its code needs (tests/unit/test_terraform.py
# holds the expected roles, so a change here is a reviewed change there too).
locals {
  service_accounts = {
    api      = "Yachay public API functions"
    launcher = "Yachay Cloud Tasks launcher"
    trainer  = "Yachay trainer (Cloud Batch jobs)"
    charger  = "Yachay job charger (Firestore trigger)"
    webhook  = "Yachay Stripe webhook receiver"
    notifier = "Yachay Batch state-notification handler"
    eraser   = "Yachay account eraser (Firebase Auth user deletion)"
    tasks    = "Yachay Cloud Tasks OIDC identity"
    gateway  = "Yachay API Gateway backend identity"
  }

  # The API and the eraser only stop Batch jobs (a cancel, an erased account): a custom role that
  # can read and delete them, never create one. Only the launcher creates Batch jobs.
  batch_job_stopper = "projects/${var.project_id}/roles/yachayBatchJobStopper"

  project_roles = {
    api      = ["roles/datastore.user", "roles/cloudtasks.enqueuer", local.batch_job_stopper, "roles/firebaseauth.viewer", "roles/eventarc.eventReceiver"]
    launcher = ["roles/datastore.user", "roles/batch.jobsEditor", "roles/cloudtasks.enqueuer"]
    # No database role: a trainer reports through the worker's trainer-report route with its
    # job's token (shared/lifecycle.py trainer_report), so it can write its own job only.
    trainer  = ["roles/batch.agentReporter", "roles/logging.logWriter"]
    charger  = ["roles/datastore.user", "roles/eventarc.eventReceiver"]
    webhook  = ["roles/datastore.user"]
    notifier = ["roles/datastore.user", "roles/eventarc.eventReceiver"]
    eraser   = ["roles/datastore.user", local.batch_job_stopper]
    tasks    = []
    gateway  = []
  }

  bucket_roles = {
    api = { models = "roles/storage.objectViewer", datasets = "roles/storage.objectAdmin", adapters = "roles/storage.objectAdmin" }
    # The launcher's roles are the union of what trainers need: it mints each trainer a token
    # limited to that job's objects (a Credential Access Boundary, shared/storage_grants.py),
    # which cannot exceed its own. The sweep also reads datasets (did an upload arrive?).
    launcher = { models = "roles/storage.objectViewer", datasets = "roles/storage.objectViewer", adapters = "roles/storage.objectAdmin", checkpoints = "roles/storage.objectAdmin" }
    # No bucket role: a trainer runs untrusted data, and reads and writes only through its
    # job's downscoped token from the worker's trainer-storage-token route.
    trainer  = {}
    charger  = {}
    webhook  = {}
    notifier = { adapters = "roles/storage.objectAdmin" }
    eraser   = { datasets = "roles/storage.objectAdmin", adapters = "roles/storage.objectAdmin", checkpoints = "roles/storage.objectAdmin" }
    tasks    = {}
    gateway  = {}
  }

  project_bindings = flatten([
    for sa, roles in local.project_roles : [for role in roles : { sa = sa, role = role }]
  ])
  bucket_bindings = flatten([
    for sa, buckets in local.bucket_roles : [
      for bucket, role in buckets : { sa = sa, bucket = bucket, role = role }
    ]
  ])
}

resource "google_service_account" "role" {
  for_each     = local.service_accounts
  account_id   = "yachay-${each.key}"
  display_name = each.value
}

resource "google_project_iam_custom_role" "batch_job_stopper" {
  project     = var.project_id
  role_id     = "yachayBatchJobStopper"
  title       = "Yachay: stop Batch jobs"
  description = "Read and delete Cloud Batch jobs; never create one."
  permissions = ["batch.jobs.get", "batch.jobs.delete"]
}

resource "google_project_iam_member" "role" {
  for_each   = { for b in local.project_bindings : "${b.sa}-${b.role}" => b }
  project    = var.project_id
  role       = each.value.role
  member     = "serviceAccount:${google_service_account.role[each.value.sa].email}"
  depends_on = [google_project_iam_custom_role.batch_job_stopper]
}

resource "google_storage_bucket_iam_member" "role" {
  for_each = { for b in local.bucket_bindings : "${b.sa}-${b.bucket}" => b }
  bucket   = google_storage_bucket.this[each.value.bucket].name
  role     = each.value.role
  member   = "serviceAccount:${google_service_account.role[each.value.sa].email}"
}

# V4 signed URLs are signed through IAM signBlob as the API's own account.
resource "google_service_account_iam_member" "api_signs_as_itself" {
  service_account_id = google_service_account.role["api"].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${google_service_account.role["api"].email}"
}

# The API creates tasks that Cloud Tasks sends with the tasks account's OIDC token.
resource "google_service_account_iam_member" "api_uses_tasks_identity" {
  service_account_id = google_service_account.role["tasks"].name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.role["api"].email}"
}

# The launcher enqueues tasks too (the sweep's relaunches, each webhook attempt's retry), sent
# with the same identity.
resource "google_service_account_iam_member" "launcher_uses_tasks_identity" {
  service_account_id = google_service_account.role["tasks"].name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.role["launcher"].email}"
}

# The launcher starts Batch jobs that run as the trainer account.
resource "google_service_account_iam_member" "launcher_runs_trainer" {
  service_account_id = google_service_account.role["trainer"].name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.role["launcher"].email}"
}

resource "google_artifact_registry_repository_iam_member" "trainer_pulls" {
  location   = google_artifact_registry_repository.trainer.location
  repository = google_artifact_registry_repository.trainer.name
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.role["trainer"].email}"
}

# Each secret is read by the accounts of the functions given it (shared/routes.py SECRETS, via
# functions.json); no other.
locals {
  secret_readers = merge([
    for name, accounts in local.wiring.secrets : { for sa in accounts : "${name}/${sa}" => { secret = name, sa = sa } }
  ]...)
}

resource "google_secret_manager_secret_iam_member" "reader" {
  for_each  = local.secret_readers
  secret_id = google_secret_manager_secret.this[each.value.secret].id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.role[each.value.sa].email}"
}

# The grants as they were declared per service before the table: kept, not recreated.
moved {
  from = google_secret_manager_secret_iam_member.stripe_key["api"]
  to   = google_secret_manager_secret_iam_member.reader["stripe-secret-key/api"]
}
moved {
  from = google_secret_manager_secret_iam_member.stripe_key["charger"]
  to   = google_secret_manager_secret_iam_member.reader["stripe-secret-key/charger"]
}
moved {
  from = google_secret_manager_secret_iam_member.stripe_key["eraser"]
  to   = google_secret_manager_secret_iam_member.reader["stripe-secret-key/eraser"]
}
moved {
  from = google_secret_manager_secret_iam_member.stripe_key["launcher"]
  to   = google_secret_manager_secret_iam_member.reader["stripe-secret-key/launcher"]
}
moved {
  from = google_secret_manager_secret_iam_member.stripe_key["webhook"]
  to   = google_secret_manager_secret_iam_member.reader["stripe-secret-key/webhook"]
}
moved {
  from = google_secret_manager_secret_iam_member.stripe_webhook_secrets
  to   = google_secret_manager_secret_iam_member.reader["stripe-webhook-secrets/webhook"]
}

# Webhook signing secrets are stored sealed (shared/secretbox.py): their data keys are wrapped by
# this key, which never leaves KMS. Only the accounts that make secrets (api: create, rotate,
# the test ping) and send deliveries (launcher) may use it; the trainer and a plain database
# read get ciphertext.
resource "google_kms_key_ring" "secrets" {
  name       = "yachay-secrets"
  location   = var.region
  depends_on = [google_project_service.enabled]
}

resource "google_kms_crypto_key" "webhook_secrets" {
  name            = "webhook-secrets"
  key_ring        = google_kms_key_ring.secrets.id
  purpose         = "ENCRYPT_DECRYPT"
  rotation_period = "7776000s" # 90 days; old versions still unwrap what they wrapped
  lifecycle {
    prevent_destroy = true # destroying it makes every stored secret unreadable
  }
}

resource "google_kms_crypto_key_iam_member" "webhook_secrets" {
  for_each      = toset(["api", "launcher"])
  crypto_key_id = google_kms_crypto_key.webhook_secrets.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${google_service_account.role[each.value].email}"
}

# Storage's service agent publishes the finalize events of the dataset trigger.
resource "google_project_iam_member" "gcs_publishes_events" {
  project = var.project_id
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:service-${data.google_project.this.number}@gs-project-accounts.iam.gserviceaccount.com"
}
