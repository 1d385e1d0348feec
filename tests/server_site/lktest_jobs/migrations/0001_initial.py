from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    operations = [
        migrations.CreateModel(
            name="Row",
            fields=[
                ("id", models.AutoField(primary_key=True, serialize=False)),
                ("key", models.CharField(max_length=100, unique=True)),
                ("pid", models.IntegerField()),
                ("during_drain", models.BooleanField()),
            ],
        ),
    ]
