"""kombu's filesystem transport (the broker of the default, no-server run) with whole messages only.

kombu writes a message file in place, while a consumer lists the folder and moves
away any file named for its queue: it can take a file that is still empty and then
dies with "Unrecoverable error: JSONDecodeError", stopping scripts/run. With beat
sending several passes at once and two workers polling, that happens within minutes.
Here a message is written under a name no consumer takes and renamed into place, so
a consumer only ever sees complete messages. Used only with CELERY_BROKER_URL=filesystem://
(settings: CELERY_BROKER_TRANSPORT); Redis and RabbitMQ do not need it.
"""

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        # The name kombu's consumers look for: "<ms>_<uuid>.<queue>.msg", oldest first.
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # ".<name>.part" does not end in "<queue>.msg" after its first dot: consumers skip it.
        partial = os.path.join(self.data_folder_out, f".{name}.part")
        try:
            with open(partial, "wb") as file:
                file.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)  # atomic on one filesystem: the message appears whole
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to the broker folder {self.data_folder_out!r}") from exc


class Transport(filesystem.Transport):
    Channel = Channel
