from rest_framework.authentication import BaseAuthentication


class BearerTokenAuthentication(BaseAuthentication):
    """Placeholder until API tokens land."""

    def authenticate(self, request):
        return None
