"""gunicorn's logger with the callback tokens blanked in its access and error logs
(powerautomation/gunicorn.conf.py selects it)."""

from gunicorn.glogging import Logger

from powerautomation.log_redaction import RedactCallbackTokens


class RedactingLogger(Logger):
    """The access log writes the request line and path (`%(r)s`, `%(U)s`, the referer...)
    and the error log `Error handling request <uri>`: each line is redacted as it is
    formatted, whatever access_log_format says."""

    def setup(self, cfg: object) -> None:
        super().setup(cfg)
        redact = RedactCallbackTokens()
        for log in (self.error_log, self.access_log):
            if not any(isinstance(existing, RedactCallbackTokens) for existing in log.filters):
                log.addFilter(redact)
