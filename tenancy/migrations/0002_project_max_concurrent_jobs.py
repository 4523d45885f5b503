import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tenancy", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="project",
            name="max_concurrent_jobs",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="Jobs of this project running at once, per queue (high, low); the others wait PENDING. Empty: the JOB_MAX_CONCURRENT_JOBS setting.",
                null=True,
                validators=[django.core.validators.MinValueValidator(1)],
                verbose_name="max concurrent jobs",
            ),
        ),
    ]
