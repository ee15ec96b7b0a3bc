//! placeholder: opentrans (being written)
