locals {
  buckets = {
    models      = { lifecycle_age = null, custom_time_expiry = false }
    datasets    = { lifecycle_age = null, custom_time_expiry = false }
    adapters    = { lifecycle_age = null, custom_time_expiry = true }
    checkpoints = { lifecycle_age = var.checkpoint_retention_days, custom_time_expiry = false }
    sources     = { lifecycle_age = null, custom_time_expiry = false }
  }
}

resource "google_storage_bucket" "this" {
  # checkov:skip=CKV_GCP_62:Object access is audited with Cloud Audit Logs (Data Access), not legacy usage-log buckets.
  for_each                    = local.buckets
  name                        = "${var.project_id}-${each.key}"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = each.key == "sources"
  }

  # Checkpoints only serve retries of a running job.
  dynamic "lifecycle_rule" {
    for_each = each.value.lifecycle_age == null ? [] : [each.value.lifecycle_age]
    content {
      condition {
        age = lifecycle_rule.value
      }
      action {
        type = "Delete"
      }
    }
  }

  # A job's files carry customTime = their expiry (moved later by storage extensions).
  dynamic "lifecycle_rule" {
    for_each = each.value.custom_time_expiry ? [0] : []
    content {
      condition {
        days_since_custom_time = lifecycle_rule.value
      }
      action {
        type = "Delete"
      }
    }
  }

  # A dataset upload is one signed PUT, so nothing half-uploaded stays; multipart (XML API)
  # uploads someone starts and never finishes are aborted after a day.
  dynamic "lifecycle_rule" {
    for_each = each.key == "datasets" ? [0] : []
    content {
      condition {
        age = 1
      }
      action {
        type = "AbortIncompleteMultipartUpload"
      }
    }
  }

  # Browsers upload datasets straight to signed URLs.
  dynamic "cors" {
    for_each = each.key == "datasets" ? [0] : []
    content {
      origin          = var.dashboard_origins
      method          = ["PUT"]
      response_header = ["Content-Type", "x-goog-content-length-range"]
      max_age_seconds = 3600
    }
  }

  depends_on = [google_project_service.enabled]
}
