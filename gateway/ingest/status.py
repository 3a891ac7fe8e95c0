"""DIMSE status codes the SCP answers with (PS3.4 Annex B.2.3, Table B.2-1; PS3.7 Annex C)."""

import enum


class StoreStatus(enum.IntEnum):
    SUCCESS = 0x0000
    #: Refused: SOP Class not supported (PS3.7 C.4.2), e.g. a store on the Verification context.
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    #: Refused: Out of Resources. The instance is not stored; the sender keeps it and retries.
    OUT_OF_RESOURCES = 0xA700
    #: Error: Data Set does not match SOP Class (here: no Study Instance UID, a Type 1 element).
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    #: Error: Cannot understand (the data set does not parse).
    CANNOT_UNDERSTAND = 0xC000


class AssociateReject(enum.Enum):
    """A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 Section 9.3.4."""

    CALLING_AE_NOT_RECOGNISED = (0x01, 0x01, 0x03)
    CALLED_AE_NOT_RECOGNISED = (0x01, 0x01, 0x07)
    NO_REASON_GIVEN = (0x01, 0x01, 0x01)
    LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)
