locals {
  services = [
    "apigateway.googleapis.com",
    "artifactregistry.googleapis.com",
    "batch.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudkms.googleapis.com",
    "cloudscheduler.googleapis.com",
    "cloudtasks.googleapis.com",
    "compute.googleapis.com",
    "eventarc.googleapis.com",
    "firebase.googleapis.com",
    "firebaserules.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "identitytoolkit.googleapis.com",
    "logging.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "servicecontrol.googleapis.com",
    "servicemanagement.googleapis.com",
    "storage.googleapis.com",
  ]
}

resource "google_project_service" "enabled" {
  for_each           = toset(local.services)
  service            = each.value
  disable_on_destroy = false
}

data "google_project" "this" {}

resource "google_firestore_database" "default" {
  name        = "(default)"
  location_id = var.region
  type        = "FIRESTORE_NATIVE"
  depends_on  = [google_project_service.enabled]
}

# Every composite index our queries need (store.list_owned: newest first, optionally by status).
locals {
  firestore_indexes = {
    jobs_by_user           = { collection = "jobs", fields = ["uid"] }
    jobs_by_user_status    = { collection = "jobs", fields = ["uid", "status"] }
    datasets_by_user       = { collection = "datasets", fields = ["uid"] }
    charges_by_user_status = { collection = "charges", fields = ["uid", "status"] }
  }
}

# jobs.relaunch_stale: status == queued and created_at < t.
resource "google_firestore_index" "stale_queued" {
  database   = google_firestore_database.default.name
  collection = "jobs"
  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "created_at"
    order      = "ASCENDING"
  }
}

# authorization.renew_holds: authorization.status == authorized and authorization.authorized_at < t.
resource "google_firestore_index" "held_since" {
  database   = google_firestore_database.default.name
  collection = "jobs"
  fields {
    field_path = "authorization.status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "authorization.authorized_at"
    order      = "ASCENDING"
  }
}

# lifecycle.reconcile: status in (queued, running) and updated_at < t; ended jobs with no payment.
resource "google_firestore_index" "unchanged_active" {
  database   = google_firestore_database.default.name
  collection = "jobs"
  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "updated_at"
    order      = "ASCENDING"
  }
}

resource "google_firestore_index" "unsettled_ended" {
  database   = google_firestore_database.default.name
  collection = "jobs"
  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "payment"
    order      = "ASCENDING"
  }
  fields {
    field_path = "ended_at"
    order      = "ASCENDING"
  }
}

# datasets.sweep_abandoned: status == pending_upload and created_at < t.
resource "google_firestore_index" "abandoned_uploads" {
  database   = google_firestore_database.default.name
  collection = "datasets"
  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "created_at"
    order      = "ASCENDING"
  }
}

# Every 10 minutes, enqueue again the launch of jobs whose first enqueue failed, and renew the
# card holds of jobs active for 6 days (Stripe cancels a hold after 7), and delete datasets whose
# upload never came.
resource "google_cloud_scheduler_job" "relaunch_stale" {
  name      = "relaunch-stale-jobs"
  region    = var.region
  schedule  = "*/10 * * * *"
  time_zone = "Etc/UTC"

  http_target {
    http_method = "POST"
    uri         = "${local.worker_url}${local.wiring.paths.relaunch_stale}"
    oidc_token {
      service_account_email = google_service_account.role["tasks"].email
      audience              = local.launch_url # the audience the worker verifies in code
    }
  }
  depends_on = [google_project_service.enabled]
}

resource "google_firestore_index" "listing" {
  for_each   = local.firestore_indexes
  database   = google_firestore_database.default.name
  collection = each.value.collection

  dynamic "fields" {
    for_each = each.value.fields
    content {
      field_path = fields.value
      order      = "ASCENDING"
    }
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
  fields {
    field_path = "__name__"
    order      = "DESCENDING"
  }
}

resource "google_artifact_registry_repository" "trainer" {
  # checkov:skip=CKV_GCP_84:Google-managed encryption; the image holds our code only, no customer data.
  location      = var.region
  repository_id = "trainer"
  format        = "DOCKER"
  description   = "The trainer container that Cloud Batch runs."
  depends_on    = [google_project_service.enabled]
}

# Secret values are added outside Terraform (`gcloud secrets versions add`), never in state.
# One per entry of shared/routes.py SECRETS (functions.json).
resource "google_secret_manager_secret" "this" {
  for_each  = local.wiring.secrets
  secret_id = each.key
  replication {
    auto {}
  }
  depends_on = [google_project_service.enabled]
}

# Declared per service before the secrets table: the same secrets, kept (not recreated).
moved {
  from = google_secret_manager_secret.stripe["stripe-secret-key"]
  to   = google_secret_manager_secret.this["stripe-secret-key"]
}
moved {
  from = google_secret_manager_secret.stripe["stripe-webhook-secrets"]
  to   = google_secret_manager_secret.this["stripe-webhook-secrets"]
}

resource "google_pubsub_topic" "batch_states" {
  # checkov:skip=CKV_GCP_83:Google-managed encryption; messages carry only Batch job names and states.
  name       = "batch-job-states"
  depends_on = [google_project_service.enabled]
}

resource "google_cloud_tasks_queue" "launch" {
  name     = "launch-jobs"
  location = var.region

  rate_limits {
    max_dispatches_per_second = 10
    max_concurrent_dispatches = 20
  }
  retry_config {
    max_attempts       = 20
    max_retry_duration = "3600s"
    min_backoff        = "5s"
    max_backoff        = "300s"
    max_doublings      = 5
  }
  depends_on = [google_project_service.enabled]
}

# Webhook deliveries: a queue of their own, so receivers that hang (each attempt waits up to its
# timeout) never delay a launch. Each attempt schedules the next itself (the Standard Webhooks
# schedule); Cloud Tasks retries only our own failures.
resource "google_cloud_tasks_queue" "webhooks" {
  name     = "webhook-deliveries"
  location = var.region

  rate_limits {
    max_dispatches_per_second = 50
    max_concurrent_dispatches = 100
  }
  retry_config {
    max_attempts       = 5
    max_retry_duration = "3600s"
    min_backoff        = "10s"
    max_backoff        = "600s"
    max_doublings      = 4
  }
  depends_on = [google_project_service.enabled]
}

# Token counts of large datasets (shared/token_counts.py): each task encodes one file with one
# model's tokenizer, up to 30 minutes; their own queue, so they never delay a launch.
resource "google_cloud_tasks_queue" "counts" {
  name     = "token-counts"
  location = var.region

  rate_limits {
    max_dispatches_per_second = 5
    max_concurrent_dispatches = 10
  }
  retry_config {
    max_attempts       = 5
    max_retry_duration = "3600s"
    min_backoff        = "10s"
    max_backoff        = "300s"
    max_doublings      = 4
  }
  depends_on = [google_project_service.enabled]
}

# webhooks.deliveries: endpoint_id == e, newest first.
resource "google_firestore_index" "webhook_deliveries" {
  database   = google_firestore_database.default.name
  collection = "webhook_deliveries"
  fields {
    field_path = "endpoint_id"
    order      = "ASCENDING"
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
}

# TTL policies: each collection's TTL field, from its one declaration (shared/documents.py,
# written into functions.json by `make openapi`): webhook events and deliveries (30 days),
# rate-limit windows (minutes).
resource "google_firestore_field" "ttl" {
  for_each   = local.wiring.firestore_ttl
  database   = google_firestore_database.default.name
  collection = each.key
  field      = each.value
  ttl_config {}
  # The TTL field needs no single-field index.
  index_config {}
}

# Firestore security rules: deny every client (terraform/firestore.rules, also loaded by the local
# Firestore emulator and tested there).
resource "google_firebaserules_ruleset" "firestore" {
  project = var.project_id
  source {
    files {
      name    = "firestore.rules"
      content = file("${path.module}/firestore.rules")
    }
  }
  depends_on = [google_project_service.enabled, google_firestore_database.default]
}

resource "google_firebaserules_release" "firestore" {
  project      = var.project_id
  name         = "cloud.firestore"
  ruleset_name = "projects/${var.project_id}/rulesets/${google_firebaserules_ruleset.firestore.name}"
}
