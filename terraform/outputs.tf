output "gateway_url" {
  description = "The public API base URL (append /v1/...)."
  value       = "https://${google_api_gateway_gateway.api.default_hostname}"
}

output "buckets" {
  description = "Bucket names by role."
  value       = { for k, b in google_storage_bucket.this : k => b.name }
}

output "trainer_repository" {
  description = "Where Cloud Build pushes the trainer image."
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.trainer.repository_id}"
}
