from django.core.management.base import BaseCommand

from llm.services import credentials_rotate


class Command(BaseCommand):
    help = "Re-encrypt every stored provider credential under the newest CREDENTIALS_ENCRYPTION_KEYS key."

    def handle(self, *args, **options):
        count = credentials_rotate()
        self.stdout.write(f"re-encrypted {count} credential(s)")
