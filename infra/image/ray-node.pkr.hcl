# A Ray node image for the fast boot path (docs/image.md): Ubuntu 22.04 with Ray in /opt/ray/venv, published as a
# version of an image definition in an Azure Compute Gallery. A VM booted from it skips the Ray install of
# provisioning/head/templates/bootstrap.sh, which installs Ray only when neither `ray` nor /opt/ray/venv/bin/ray
# exists. tests/unit/test_image_template.py keeps ray_version and the venv path equal to the project's.
#
#   packer init infra/image/ray-node.pkr.hcl
#   packer build -var subscription_id=... -var location=... -var gallery_resource_group=... \
#                -var gallery_name=... -var image_version=1.0.0 infra/image/ray-node.pkr.hcl

packer {
  required_plugins {
    azure = {
      source  = "github.com/hashicorp/azure"
      version = ">= 2.1.0"
    }
  }
}

variable "subscription_id" {
  type        = string
  description = "Subscription of the gallery (and of the temporary build VM)."
}

variable "location" {
  type        = string
  description = "Region of the build VM; the image version is replicated to this region."
}

variable "gallery_resource_group" {
  type        = string
  description = "Resource group of the Compute Gallery."
}

variable "gallery_name" {
  type        = string
  description = "Name of the Compute Gallery."
}

variable "image_definition" {
  type        = string
  default     = "ray-node"
  description = "Image definition in the gallery (Linux, generalized, Hyper-V generation V2); create it first (docs/image.md)."
}

variable "image_version" {
  type        = string
  description = "Version to publish, MAJOR.MINOR.PATCH (e.g. 1.0.0); a gallery refuses to overwrite a version."

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.image_version))
    error_message = "The image_version must be MAJOR.MINOR.PATCH, e.g. 1.0.0."
  }
}

variable "ray_version" {
  type        = string
  default     = "2.60.0"
  description = "Ray to preinstall: the version the nodes would install at boot (DEFAULT_RAY_VERSION)."
}

variable "build_vm_size" {
  type        = string
  default     = "Standard_D2s_v5"
  description = "Size of the temporary build VM (the image runs on any Gen2 size)."
}

locals {
  # The path bootstrap.sh, start-ray.sh and the head agent look for Ray in.
  ray_venv = "/opt/ray/venv"
}

source "azure-arm" "ray_node" {
  subscription_id    = var.subscription_id
  use_azure_cli_auth = true

  os_type         = "Linux"
  image_publisher = "Canonical"
  image_offer     = "0001-com-ubuntu-server-jammy"
  image_sku       = "22_04-lts-gen2"
  image_version   = "latest"

  location = var.location
  vm_size  = var.build_vm_size

  shared_image_gallery_destination {
    subscription         = var.subscription_id
    resource_group       = var.gallery_resource_group
    gallery_name         = var.gallery_name
    image_name           = var.image_definition
    image_version        = var.image_version
    replication_regions  = [var.location]
    storage_account_type = "Standard_LRS"
  }

  azure_tags = {
    "ray-version" = var.ray_version
    "built-by"    = "infra/image/ray-node.pkr.hcl"
  }
}

build {
  sources = ["source.azure-arm.ray_node"]

  # What bootstrap.sh would do on every first boot, done once here: the same packages, the same venv, the same Ray.
  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; {{ .Vars }} sudo -E sh '{{ .Path }}'"
    environment_vars = [
      "RAY_VERSION=${var.ray_version}",
      "RAY_VENV=${local.ray_venv}",
      "DEBIAN_FRONTEND=noninteractive",
    ]
    inline = [
      "set -eu",
      # Ubuntu's first-boot cloud-init runs apt itself: wait for it rather than race it for the dpkg lock. Its exit
      # code tells how cloud-init's own run went (2: recoverable warnings), which is not this build's concern.
      "cloud-init status --wait >/dev/null || true",
      # apt-daily may still hold the lock after cloud-init: wait for it too.
      "apt-get -o DPkg::Lock::Timeout=600 update -q",
      "apt-get -o DPkg::Lock::Timeout=600 install -y -q python3-venv python3-pip",
      "python3 -m venv \"$RAY_VENV\"",
      "\"$RAY_VENV/bin/pip\" install -q --no-cache-dir \"ray[default]==$RAY_VERSION\"",
      "\"$RAY_VENV/bin/ray\" --version",
      "apt-get clean",
    ]
  }

  # Generalize last: Azure needs a deprovisioned VM to capture a generalized image.
  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; {{ .Vars }} sudo -E sh '{{ .Path }}'"
    inline_shebang  = "/bin/sh -x"
    inline          = ["/usr/sbin/waagent -force -deprovision+user && export HISTSIZE=0 && sync"]
  }
}
