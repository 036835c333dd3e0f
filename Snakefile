# actorseg: actor-action semantic segmentation on A2D as a DAG of cached stages.
# The Snakefile wires; pipeline/ computes. Every rule is one `python -m pipeline.<stage>` call.

from snakemake.utils import min_version, validate

min_version("9.20")


configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/frames.smk"
include: "workflow/rules/flow.smk"
include: "workflow/rules/region.smk"
include: "workflow/rules/masks.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/e2e.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        final_targets(),
