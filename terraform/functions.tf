# One gen2 function per entry of the route table (shared/routes.py: ROUTES, TRIGGERS and
# DEPLOYMENTS), read from functions.json, which `make openapi` generates from it (a test fails
# when it is stale). Public API functions are reachable only through API Gateway (IAM: the
# gateway's account is the only invoker); internal ones only from inside Google Cloud (ingress)
# by their one caller (IAM).
locals {
  wiring    = jsondecode(file("${path.module}/functions.json"))
  functions = local.wiring.functions
  # Firebase Auth events have no 2nd-gen trigger: those functions deploy as 1st gen.
  gen2 = { for name, f in local.functions : name => f if f.kind != "auth" }
  gen1 = { for name, f in local.functions : name => f if f.kind == "auth" }

  # Deterministic (no cycle through the function's own attributes); the path is its route.
  worker_url = "https://${var.region}-${var.project_id}.cloudfunctions.net/worker"
  launch_url = "${local.worker_url}${local.wiring.paths.launch_job}"
  count_url  = "https://${var.region}-${var.project_id}.cloudfunctions.net/count-tokens${local.wiring.paths.count_tokens}"

  # Every variable shared/config.py reads in production (the test checks none is missing).
  common_env = {
    YACHAY_ENV                     = "production"
    GOOGLE_CLOUD_PROJECT           = var.project_id
    YACHAY_REGION                  = var.region
    YACHAY_VERSION                 = var.trainer_image_tag
    YACHAY_CORS_ORIGINS            = join(",", var.dashboard_origins)
    YACHAY_API_BASE_URL            = var.api_base_url
    YACHAY_AUTH_HEADER             = "X-Forwarded-Authorization"
    YACHAY_MODELS_BUCKET           = google_storage_bucket.this["models"].name
    YACHAY_MODELS_PREFIX           = "models"
    YACHAY_DATASETS_BUCKET         = google_storage_bucket.this["datasets"].name
    YACHAY_ARTIFACTS_BUCKET        = google_storage_bucket.this["adapters"].name
    YACHAY_CHECKPOINTS_BUCKET      = google_storage_bucket.this["checkpoints"].name
    YACHAY_DATASET_MAX_BYTES       = tostring(var.dataset_max_bytes)
    YACHAY_MAX_ACTIVE_JOBS         = tostring(var.max_active_jobs)
    YACHAY_DATASET_MAX_COUNT       = tostring(var.dataset_max_count)
    YACHAY_DATASET_QUOTA_BYTES     = tostring(var.dataset_quota_bytes)
    YACHAY_STARTUP_OVERHEAD_S      = "180"
    YACHAY_RETENTION_DAYS          = tostring(var.retention_days)
    YACHAY_TASKS_QUEUE             = google_cloud_tasks_queue.launch.id
    YACHAY_WEBHOOKS_QUEUE          = google_cloud_tasks_queue.webhooks.id
    YACHAY_KEY_OWNER_CHECK_S       = "60"
    YACHAY_TASK_TARGET_URL         = local.launch_url
    YACHAY_WEBHOOK_TARGET_URL      = "${local.worker_url}${local.wiring.paths.deliver_webhook}"
    YACHAY_COUNTS_QUEUE            = google_cloud_tasks_queue.counts.id
    YACHAY_TRAINER_REPORT_URL      = "${local.worker_url}${local.wiring.paths.trainer_report}"
    YACHAY_TRAINER_REPORT_AUDIENCE = local.worker_url
    YACHAY_SECRETS_KEY             = "kms:${google_kms_crypto_key.webhook_secrets.id}"
    YACHAY_COUNT_TARGET_URL        = local.count_url
    YACHAY_COUNT_INLINE_BYTES      = tostring(8 * 1024 * 1024) # above: counted in the background
    YACHAY_TASKS_SERVICE_ACCOUNT   = google_service_account.role["tasks"].email
    YACHAY_OIDC_CERTS_URL          = "https://www.googleapis.com/oauth2/v1/certs"
    YACHAY_BATCH_BACKEND           = "cloud"
    YACHAY_BATCH_TOPIC             = google_pubsub_topic.batch_states.name
    YACHAY_BATCH_SERVICE_ACCOUNT   = google_service_account.role["trainer"].email
    YACHAY_TRAINER_IMAGE           = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.trainer.repository_id}/trainer:${var.trainer_image_tag}"
    YACHAY_CHECKOUT_BACKEND        = "stripe"
    YACHAY_CHECKOUT_SUCCESS_URL    = var.checkout_success_url
    YACHAY_CHECKOUT_CANCEL_URL     = var.checkout_cancel_url
    YACHAY_CURRENCY                = "usd"
  }
}

data "archive_file" "function" {
  for_each    = local.functions
  type        = "zip"
  source_dir  = "${var.build_dir}/${each.key}"
  output_path = "${path.module}/.build/${each.key}.zip"
}

resource "google_storage_bucket_object" "function_source" {
  for_each = local.functions
  # Named by content hash: any change to the function or to shared/ makes a new object and a
  # redeploy.
  name   = "functions/${each.key}-${data.archive_file.function[each.key].output_sha256}.zip"
  bucket = google_storage_bucket.this["sources"].name
  source = data.archive_file.function[each.key].output_path
}

resource "google_cloudfunctions2_function" "fn" {
  for_each = local.gen2
  name     = replace(each.key, "_", "-")
  location = var.region

  build_config {
    runtime     = "python311"
    entry_point = each.key
    source {
      storage_source {
        bucket = google_storage_bucket.this["sources"].name
        object = google_storage_bucket_object.function_source[each.key].name
      }
    }
  }

  service_config {
    available_memory      = each.value.memory
    timeout_seconds       = each.value.timeout_s
    max_instance_count    = 50
    service_account_email = google_service_account.role[each.value.sa].email
    ingress_settings      = each.value.kind == "public" ? "ALLOW_ALL" : "ALLOW_INTERNAL_ONLY"
    environment_variables = local.common_env

    # Exactly the secrets this function reads (shared/routes.py SECRETS).
    dynamic "secret_environment_variables" {
      for_each = each.value.secrets
      content {
        key        = secret_environment_variables.key
        project_id = var.project_id
        secret     = google_secret_manager_secret.this[secret_environment_variables.value].secret_id
        version    = "latest"
      }
    }
  }

  dynamic "event_trigger" {
    for_each = each.value.kind == "firestore" ? [0] : []
    content {
      trigger_region        = var.region
      event_type            = each.value.event_type
      retry_policy          = "RETRY_POLICY_RETRY"
      service_account_email = google_service_account.role[each.value.sa].email
      event_filters {
        attribute = "database"
        value     = google_firestore_database.default.name
      }
      event_filters {
        attribute = "document"
        value     = each.value.document
        operator  = "match-path-pattern"
      }
    }
  }

  dynamic "event_trigger" {
    for_each = each.value.kind == "pubsub" ? [0] : []
    content {
      trigger_region        = var.region
      event_type            = each.value.event_type
      pubsub_topic          = "projects/${var.project_id}/topics/${each.value.topic}"
      retry_policy          = "RETRY_POLICY_RETRY"
      service_account_email = google_service_account.role[each.value.sa].email
    }
  }

  dynamic "event_trigger" {
    for_each = each.value.kind == "storage" ? [0] : []
    content {
      trigger_region        = var.region
      event_type            = each.value.event_type
      retry_policy          = "RETRY_POLICY_RETRY"
      service_account_email = google_service_account.role[each.value.sa].email
      event_filters {
        attribute = "bucket"
        value     = google_storage_bucket.this[each.value.bucket].name
      }
    }
  }

  depends_on = [
    google_project_service.enabled,
    google_project_iam_member.gcs_publishes_events,
    google_pubsub_topic.batch_states,
  ]
}

# Who may invoke what: the gateway the public functions, Cloud Tasks the worker, each
# trigger's own account its handler. Nobody else (no allUsers anywhere).
locals {
  invokers = merge(
    { for name, f in local.functions : name => "gateway" if f.kind == "public" },
    { for name, f in local.functions : name => "tasks" if f.kind == "tasks" },
    { for name, f in local.functions : name => f.sa if contains(["firestore", "pubsub", "storage"], f.kind) },
  )
}

# Trainers report progress to the worker (its trainer-report route; the job token in the body's
# header decides which job they may write): the trainer account may invoke that service too.
resource "google_cloud_run_service_iam_member" "trainer_reports" {
  location = var.region
  service  = google_cloudfunctions2_function.fn["worker"].service_config[0].service
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.role["trainer"].email}"
}

resource "google_cloud_run_service_iam_member" "invoker" {
  for_each = local.invokers
  location = var.region
  service  = google_cloudfunctions2_function.fn[each.key].service_config[0].service
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.role[each.value].email}"
}

# Firebase Auth user deletion -> erase the account (functions/auth_events).
resource "google_cloudfunctions_function" "auth" {
  # checkov:skip=CKV_GCP_124:Event-triggered, no HTTP trigger: no public ingress to restrict.
  for_each              = local.gen1
  name                  = replace(each.key, "_", "-")
  region                = var.region
  runtime               = "python311"
  entry_point           = each.key
  available_memory_mb   = 512
  timeout               = 300
  service_account_email = google_service_account.role[each.value.sa].email
  source_archive_bucket = google_storage_bucket.this["sources"].name
  source_archive_object = google_storage_bucket_object.function_source[each.key].name
  environment_variables = local.common_env

  dynamic "secret_environment_variables" {
    for_each = each.value.secrets
    content {
      key        = secret_environment_variables.key
      project_id = var.project_id
      secret     = google_secret_manager_secret.this[secret_environment_variables.value].secret_id
      version    = "latest"
    }
  }

  event_trigger {
    event_type = each.value.event_type
    resource   = "projects/${var.project_id}"
    failure_policy {
      retry = true
    }
  }
  depends_on = [google_project_service.enabled]
}
