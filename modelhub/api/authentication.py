"""`Authorization: Bearer mh_…` authentication for CI pipelines."""

from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed

from modelhub.api.tokens import TokenRejected, authenticate_token


class BearerTokenAuthentication(BaseAuthentication):
    keyword = b"bearer"

    def authenticate(self, request):
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword:
            return None  # not ours: session authentication may still apply
        if len(header) != 2:
            raise AuthenticationFailed("malformed Authorization header: use 'Bearer <token>'")
        try:
            text = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise AuthenticationFailed("malformed API token: not ASCII") from None
        try:
            token = authenticate_token(text)
        except TokenRejected as exc:
            raise AuthenticationFailed(str(exc)) from None
        return token.user, token

    def authenticate_header(self, request) -> str:
        # Its presence makes DRF answer 401 (not 403) to unauthenticated requests.
        return 'Bearer realm="modelhub"'
