import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tenancy", "0002_project_max_concurrent_jobs"),
    ]

    operations = [
        migrations.AddField(
            model_name="project",
            name="max_submissions_per_minute",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="Jobs of this project admitted to the workers in any 60 seconds, both queues together; the others wait PENDING. Empty: the JOB_MAX_SUBMISSIONS_PER_MINUTE setting (0 there: no limit).",
                null=True,
                validators=[django.core.validators.MinValueValidator(1)],
                verbose_name="max submissions per minute",
            ),
        ),
    ]
