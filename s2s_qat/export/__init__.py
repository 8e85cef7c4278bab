"""Export stage: TFLite conversion per numeric mode, and the op inventory of the result."""
from s2s_qat.export.convert import MODES, convert
from s2s_qat.export.inventory import NotTFLiteError, OpInventory, inventory, inventory_file

__all__ = ["MODES", "convert", "NotTFLiteError", "OpInventory", "inventory", "inventory_file"]
