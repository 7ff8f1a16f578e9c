"""nnU-Net interop, above the data layer: a task exported as an nnU-Net raw dataset (``export_nnunet``), nnU-Net's
predictions scored into the store (``import_predictions``), and nnU-Net's network and checkpoints as a backbone and
source models (``nnunet``)."""
