# API Gateway from the OpenAPI 2.0 config generated from shared/routes.py (make openapi).
resource "google_api_gateway_api" "api" {
  provider   = google-beta
  api_id     = "yachay"
  depends_on = [google_project_service.enabled]
}

resource "google_api_gateway_api_config" "api" {
  provider             = google-beta
  api                  = google_api_gateway_api.api.api_id
  api_config_id_prefix = "yachay-"

  openapi_documents {
    document {
      path = "openapi.json"
      contents = base64encode(templatefile("${path.module}/openapi.json.tftpl", merge(
        { project_id = var.project_id },
        { for name, f in local.functions : "backend_${name}" => google_cloudfunctions2_function.fn[name].service_config[0].uri if f.kind == "public" },
      )))
    }
  }

  gateway_config {
    backend_config {
      google_service_account = google_service_account.role["gateway"].email
    }
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "google_api_gateway_gateway" "api" {
  provider   = google-beta
  region     = var.region
  api_config = google_api_gateway_api_config.api.id
  gateway_id = "yachay"
}
