terraform {
  required_version = ">= 1.6"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "= 6.14.1"
    }
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "= 6.14.1"
    }
    archive = {
      source  = "hashicorp/archive"
      version = "= 2.7.0"
    }
  }

  # Remote state: `terraform init -backend-config="bucket=<state bucket>" -backend-config="prefix=yachay"`.
  backend "gcs" {}
}

provider "google" {
  project = var.project_id
  region  = var.region
}

provider "google-beta" {
  project = var.project_id
  region  = var.region
}
