"""`diet-hf export onnx`: a pruned model to ONNX through optimum."""

from .common import EXIT_OK


def _run_export(args) -> int:
    from ..info import check_pruned_checkpoint

    check_pruned_checkpoint(args.model)  # clear errors before importing optimum (slow, and an optional extra)
    from ..constants import ONNX_TASKS
    from ..onnx import default_task, export_onnx

    task = args.task or default_task(args.model)
    output = export_onnx(
        args.model, args.output, task=task, opset=args.opset, validate=not args.no_validation, atol=args.atol
    )
    loader = ONNX_TASKS[task]
    print(f"exported {args.model} ({task}) to {output / 'model.onnx'}; load it with {loader}.from_pretrained")
    return EXIT_OK
