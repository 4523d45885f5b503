from django.core.management.base import BaseCommand

from kaapi import crypto


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret (provider credentials and webhook signing secrets) under the newest "
        "CREDENTIALS_ENCRYPTION_KEYS key."
    )

    def handle(self, *args, **options):
        for what, count in crypto.reencrypt_all().items():
            self.stdout.write(f"re-encrypted {count} {what}(s)")
