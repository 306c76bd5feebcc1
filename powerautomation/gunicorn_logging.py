"""gunicorn's logger with the callback tokens blanked in its access and error logs, and
with LOG_FORMAT=json their lines as JSON objects like every other log line
(powerautomation/gunicorn.conf.py selects it). gunicorn's logs are its own, outside Django's
LOGGING: the master process never loads the settings."""

from gunicorn.glogging import Logger

from powerautomation.log_redaction import RedactCallbackTokens
from powerautomation.structured_logging import JsonFormatter, log_format


class RedactingLogger(Logger):
    """The access log writes the request line and path (`%(r)s`, `%(U)s`, the referer...)
    and the error log `Error handling request <uri>`: each line is redacted as it is
    formatted, whatever access_log_format says."""

    def setup(self, cfg: object) -> None:
        super().setup(cfg)
        redact = RedactCallbackTokens()
        json_lines = log_format() == "json"  # a bad LOG_FORMAT stops gunicorn here, naming it
        for log in (self.error_log, self.access_log):
            if not any(isinstance(existing, RedactCallbackTokens) for existing in log.filters):
                log.addFilter(redact)
            if json_lines:
                # An access line is the record's message, as access_log_format writes it.
                for handler in log.handlers:
                    handler.setFormatter(JsonFormatter())
