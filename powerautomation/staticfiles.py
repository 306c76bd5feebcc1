"""The static files storage: never fail a page for want of a collected manifest."""

from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticFilesStorage(CompressedManifestStaticFilesStorage):
    """WhiteNoise's hashed, compressed files once `collectstatic` has run (`make run` does).
    Before that (`migrate` alone), there is no manifest and the manifest storage would
    raise for every `{% static %}`, so every admin page would answer 500: names are then
    left as they are, and WhiteNoise serves them from the apps' folders
    (WHITENOISE_USE_FINDERS in settings)."""

    def stored_name(self, name: str) -> str:
        if not self.hashed_files:  # no manifest: never collected
            return name
        return super().stored_name(name)
