variable "project_id" {
  description = "The Google Cloud project to deploy into."
  type        = string
}

variable "region" {
  description = "Region for functions, Batch, Tasks, buckets and the gateway."
  type        = string
  default     = "us-central1"
}

variable "dashboard_origins" {
  description = "Browser origins allowed by CORS (the dashboard)."
  type        = list(string)
}

variable "api_base_url" {
  description = "The public base URL clients use (the gateway's hostname, or a custom domain in front of it); links we hand out, such as the billing-portal link of GET /v1/me, point there."
  type        = string
}

variable "checkout_success_url" {
  description = "Where Stripe Checkout returns after a card is saved."
  type        = string
}

variable "checkout_cancel_url" {
  description = "Where Stripe Checkout returns when the user gives up."
  type        = string
}

variable "trainer_image_tag" {
  description = "Tag of the trainer image in Artifact Registry (Cloud Build passes the commit)."
  type        = string
}

variable "build_dir" {
  description = "Folder where terraform/package.py put one source folder per function."
  type        = string
  default     = "../build/functions"
}

variable "retention_days" {
  description = "Days a completed job's files are kept before extensions."
  type        = number
  default     = 30
}

variable "max_active_jobs" {
  description = "Queued plus running jobs one user may have."
  type        = number
  default     = 3
}

variable "dataset_max_count" {
  description = "Datasets one account may keep."
  type        = number
  default     = 100
}

variable "dataset_quota_bytes" {
  description = "Bytes all of one account's datasets may declare together (2 GiB)."
  type        = number
  default     = 2147483648
}

variable "dataset_max_bytes" {
  description = "Largest dataset upload."
  type        = number
  default     = 104857600
}

variable "checkpoint_retention_days" {
  description = "Days checkpoints are kept (they only serve retries)."
  type        = number
  default     = 7
}
