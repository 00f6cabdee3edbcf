import json
from decimal import Decimal

from django import forms
from django.core.validators import RegexValidator
from django.db import transaction

from deployments.models import CatalogModel, Deployment, Engine, ModelAlias, Precision
from deployments.services import MAX_REPLICAS
from nodeprotocol.gpus import GPU_PROFILE_CHOICES

# An alias is a name clients pass as "model": it obeys the rules of model ids.
MODEL_ID_PATTERN = next(v for v in CatalogModel._meta.get_field("model_id").validators if isinstance(v, RegexValidator))


class JoinTokenCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Something to recognise it by, e.g. “rack 3” or “lab 4090”.")


# --- Deployments ----------------------------------------------------------------------------------


class EngineSettingsField(forms.CharField):
    """A JSON object typed into a textarea; blank means no settings ({})."""

    widget = forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "mono"})

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("strip", True)
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, dict):
            return json.dumps(value, indent=2) if value else ""
        return value

    def to_python(self, value):
        text = super().to_python(value)
        if not text:
            return {}
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as error:
            raise forms.ValidationError(
                'This is not valid JSON (%(problem)s). Write an object, e.g. {"base_url": "http://127.0.0.1:8001/v1"}.',
                params={"problem": f"{error.msg} at line {error.lineno}, column {error.colno}"},
                code="invalid_json",
            ) from None
        if not isinstance(parsed, dict):
            raise forms.ValidationError(
                'Engine settings must be a JSON object in braces, e.g. {"model": "..."}; leave it empty for none.',
                code="not_an_object",
            )
        return parsed


class CatalogModelChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, model: CatalogModel) -> str:
        return f"{model.model_id} · {model.parameters_billion.normalize():f}B"


# Short labels: the code first, as the tables show it, so a narrow select still reads right.
ENGINE_CHOICES = [
    (Engine.SIMULATED, "simulated — paced like a GPU"),
    (Engine.OPENAI, "openai — a server on the node (vLLM, SGLang, TGI…)"),
    (Engine.HF, "hf — Hugging Face, in-process"),
]
PLACEMENT_CHOICES = [
    (Deployment.Placement.BINPACK, "binpack — fill nodes first"),
    (Deployment.Placement.SPREAD, "spread — emptiest nodes first"),
]


def _replicas_field(min_value: int) -> forms.IntegerField:
    return forms.IntegerField(
        min_value=min_value,
        max_value=MAX_REPLICAS,
        initial=1,
        widget=forms.NumberInput(attrs={"min": min_value, "max": MAX_REPLICAS}),
        error_messages={
            "min_value": "At least %(limit_value)s.",
            "max_value": "At most %(limit_value)s replicas.",
        },
    )


class DeploymentSettingsForm(forms.Form):
    """What an operator may change on a deployment (services.UPDATABLE)."""

    replicas = _replicas_field(min_value=0)
    engine_config = EngineSettingsField(
        label="Engine settings (JSON)",
        help_text='For “openai”: {"base_url": "http://127.0.0.1:8001/v1", "model": "…"}. Empty for none.',
    )
    precision = forms.ChoiceField(choices=Precision.choices, initial=Precision.FP16)
    gpu_profile = forms.ChoiceField(
        label="GPU type preference", choices=[("", "Any GPU"), *GPU_PROFILE_CHOICES], required=False
    )
    placement = forms.ChoiceField(choices=PLACEMENT_CHOICES, initial=Deployment.Placement.BINPACK)
    # Autoscaling (deployments.autoscale): both empty for a fixed number of replicas.
    min_replicas = forms.IntegerField(
        label="Autoscale: min replicas", required=False, min_value=1, max_value=MAX_REPLICAS,
        help_text="Never fewer (default 1).",
    )  # fmt: skip
    max_replicas = forms.IntegerField(
        label="Autoscale: max replicas", required=False, min_value=1, max_value=MAX_REPLICAS,
        help_text="Replicas are added while requests wait and removed when quiet. Empty: no autoscaling.",
    )  # fmt: skip


class DeploymentCreateForm(DeploymentSettingsForm):
    field_order = [
        "name", "model", "engine", "engine_config", "precision", "gpu_profile", "placement", "replicas",
        "min_replicas", "max_replicas",
    ]  # fmt: skip

    name = forms.SlugField(
        max_length=100, help_text="Letters, digits, - and _. Names the queue too: deployment.<name>."
    )
    model = CatalogModelChoiceField(queryset=CatalogModel.objects.all(), to_field_name="model_id", empty_label=None)
    engine = forms.ChoiceField(
        choices=[("", "the model's default engine"), *ENGINE_CHOICES],
        required=False,
        help_text="Nodes run one engine each: replicas go only to nodes of this engine.",
    )
    replicas = _replicas_field(min_value=1)


class DeploymentScaleForm(forms.Form):
    replicas = _replicas_field(min_value=0)


def add_service_errors(form: forms.Form, error) -> None:
    """Show a services ValidationError on the form: on the field it names, or above the form."""
    if not hasattr(error, "error_dict"):
        form.add_error(None, error)
        return
    for field_name, errors in error.error_dict.items():
        form.add_error(field_name if field_name in form.fields else None, errors)


# --- The catalog ----------------------------------------------------------------------------------


def _plain(value: Decimal) -> Decimal:
    """Without trailing zeros, and never in exponent form: 0.1 for 0.1000, 100 for 100.0000."""
    value = value.normalize()
    return value.quantize(Decimal(1)) if value.as_tuple().exponent > 0 else value


class CatalogModelForm(forms.ModelForm):
    """A catalog model with its memory need per precision and its aliases (saved as ModelAlias rows)."""

    memory_fp16 = forms.FloatField(label="fp16 / bf16", required=False, min_value=0.1, max_value=100_000)
    memory_int8 = forms.FloatField(label="int8", required=False, min_value=0.1, max_value=100_000)
    memory_int4 = forms.FloatField(label="int4", required=False, min_value=0.1, max_value=100_000)
    aliases = forms.CharField(
        required=False,
        max_length=2000,
        help_text="Other names clients may pass as “model”, separated by commas, e.g. llama3, llama-3-8b.",
    )

    MEMORY_FIELDS = {"fp16": "memory_fp16", "int8": "memory_int8", "int4": "memory_int4"}

    class Meta:
        model = CatalogModel
        fields = [
            "model_id",
            "family",
            "parameters_billion",
            "context_length",
            "licence",
            "owned_by",
            "price_input_per_million",
            "price_output_per_million",
            "default_engine",
            "task",
        ]
        labels = {
            "parameters_billion": "Parameters (billions)",
            "price_input_per_million": "Input price (USD / M tokens)",
            "price_output_per_million": "Output price (USD / M tokens)",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["default_engine"].choices = ENGINE_CHOICES
        if self.instance.pk:
            self.fields["model_id"].help_text = (
                "Clients ask for the model by this name: renaming it breaks those that use the old one "
                "unless you keep it as an alias."
            )
            for name in ("price_input_per_million", "price_output_per_million"):
                self.initial[name] = _plain(getattr(self.instance, name))
            for precision, field_name in self.MEMORY_FIELDS.items():
                self.initial.setdefault(field_name, self.instance.memory_gb.get(precision))
            self.initial.setdefault("aliases", ", ".join(a.alias for a in self.instance.aliases.all()))

    @property
    def memory_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.MEMORY_FIELDS.values()]

    def _not_this_model(self) -> dict:
        """exclude() arguments that leave out this model's own aliases (nothing when creating)."""
        return {"model": self.instance} if self.instance.pk else {}

    def clean_model_id(self) -> str:
        model_id = self.cleaned_data["model_id"]
        taken = ModelAlias.objects.filter(alias=model_id).exclude(**self._not_this_model()).select_related("model")
        if taken := taken.first():
            raise forms.ValidationError(f"“{model_id}” is already an alias of {taken.model.model_id}.")
        return model_id

    def clean_aliases(self) -> list[str]:
        aliases = []
        for alias in (part.strip() for part in self.cleaned_data["aliases"].split(",")):
            if alias and alias not in aliases:
                aliases.append(alias)
        errors = []
        for alias in aliases:
            if len(alias) > 200 or not MODEL_ID_PATTERN.regex.match(alias):
                errors.append(f"“{alias}” is not a valid name: letters, digits and . _ : / - only.")
        taken = ModelAlias.objects.filter(alias__in=aliases).exclude(**self._not_this_model()).select_related("model")
        errors += [f"“{a.alias}” is already an alias of {a.model.model_id}." for a in taken]
        clashing = CatalogModel.objects.filter(model_id__in=aliases)
        if self.instance.pk:
            clashing = clashing.exclude(pk=self.instance.pk)
        errors += [f"“{m.model_id}” is the id of another model." for m in clashing]
        if errors:
            raise forms.ValidationError(errors)
        return aliases

    def clean(self):
        cleaned = super().clean()
        model_id = cleaned.get("model_id")
        if model_id and model_id in (cleaned.get("aliases") or []):
            self.add_error("aliases", f"“{model_id}” is the model's own id: no need for an alias.")
        return cleaned

    @transaction.atomic
    def save(self) -> CatalogModel:
        """Save the model, its memory need and its aliases together."""
        model = super().save(commit=False)
        model.memory_gb = {
            precision: self.cleaned_data[field_name]
            for precision, field_name in self.MEMORY_FIELDS.items()
            if self.cleaned_data.get(field_name) is not None
        }
        model.save()
        aliases = self.cleaned_data["aliases"]
        model.aliases.exclude(alias__in=aliases).delete()
        existing = set(model.aliases.values_list("alias", flat=True))
        ModelAlias.objects.bulk_create([ModelAlias(alias=a, model=model) for a in aliases if a not in existing])
        return model
