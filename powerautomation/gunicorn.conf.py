"""gunicorn settings for every web process (`gunicorn -c powerautomation/gunicorn.conf.py
powerautomation.wsgi ...`): its logs never show an agent's callback token."""

logger_class = "powerautomation.gunicorn_logging.RedactingLogger"
