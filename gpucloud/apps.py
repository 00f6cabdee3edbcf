from django.apps import AppConfig


class GpuCloudConfig(AppConfig):
    name = "gpucloud"
    verbose_name = "GPU Cloud"

    def ready(self) -> None:
        from gpucloud import checks  # noqa: F401  (registers the system checks)
