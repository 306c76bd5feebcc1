"""Request hygiene shared by every view."""

from urllib.parse import unquote

from django.http import HttpRequest, JsonResponse


class RejectNulCharactersMiddleware:
    """A NUL byte in a path or query string is never meaningful here, and PostgreSQL
    refuses it in any string it is asked to compare: answer 400 before a view passes one
    to a query (SQLite would quietly accept it; the two setups must behave the same)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        if "\x00" in request.path or "\x00" in unquote(request.META.get("QUERY_STRING", "")):
            return JsonResponse({"detail": "NUL characters are not allowed in the URL"}, status=400)
        return self.get_response(request)
