from django.core.management.base import BaseCommand

from jobs.webhooks.services import webhook_secrets_reencrypt
from llm.services import credentials_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret (provider credentials and webhook signing secrets) under the newest "
        "CREDENTIALS_ENCRYPTION_KEYS key."
    )

    def handle(self, *args, **options):
        count = credentials_rotate()
        self.stdout.write(f"re-encrypted {count} credential(s)")
        count = webhook_secrets_reencrypt()
        self.stdout.write(f"re-encrypted {count} webhook secret(s)")
