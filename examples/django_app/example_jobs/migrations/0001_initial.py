from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    operations = [
        migrations.CreateModel(
            name="Job",
            fields=[
                ("id", models.AutoField(primary_key=True, serialize=False)),
                ("batch", models.CharField(max_length=32)),
                ("kind", models.CharField(max_length=20)),
                ("queued_at", models.DateTimeField(auto_now_add=True)),
                ("responded_at", models.DateTimeField(null=True)),
                ("finished_at", models.DateTimeField(null=True)),
            ],
            options={"ordering": ("-id",)},
        ),
    ]
