from django.core.management.base import BaseCommand

from tenancy.services import api_key_create, project_get_or_create


class Command(BaseCommand):
    help = "Create an API key for a project, creating the organization and project when missing; prints the key."

    def add_arguments(self, parser):
        parser.add_argument("--organization", required=True, help="Organization name.")
        parser.add_argument("--project", required=True, help="Project name.")
        parser.add_argument("--name", default="", help="What the key is for.")

    def handle(self, *args, organization: str, project: str, name: str, **options):
        target = project_get_or_create(organization_name=organization, project_name=project)
        issued = api_key_create(project=target, name=name)
        self.stderr.write(f"API key for {target} (shown once, store it now):")
        self.stdout.write(issued.plaintext)
