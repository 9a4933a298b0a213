"""The public API is exactly what the docs list: skyeq.__all__, skyeq.io.__all__,
skyeq.synthetic.__all__ and skyeq.compat.stcal.__all__."""

import inspect

import skyeq
import skyeq.compat.stcal
import skyeq.io

PUBLIC = {
    "skyeq": ["Footprint", "Overlap", "SkyResult", "SkyStat", "SkyValue", "__version__",
              "footprints", "match_sky", "overlap_graph", "sky_statistic", "sky_summaries",
              "synthetic"],
    "skyeq.io": ["Association", "FitsImage", "collect_inputs", "match_files",
                 "output_paths", "read_association", "read_image", "read_skylist",
                 "write_results", "write_summaries", "write_table"],
    "skyeq.synthetic": ["Mosaic", "add_nebula", "constant_mosaic", "disjoint", "dithers",
                        "exposures", "on_wcs", "repoint", "tile_grid"],
    "skyeq.compat.stcal": ["SkyGroup", "SkyImage", "SkyStats", "skymatch"],
}


def test_the_public_names_are_pinned():
    # adding or removing a public name is an API change: update this list, the API
    # page and the CHANGELOG together
    assert sorted(skyeq.__all__) == sorted(PUBLIC["skyeq"])
    assert sorted(skyeq.io.__all__) == sorted(PUBLIC["skyeq.io"])
    assert sorted(skyeq.synthetic.__all__) == sorted(PUBLIC["skyeq.synthetic"])
    assert sorted(skyeq.compat.stcal.__all__) == sorted(PUBLIC["skyeq.compat.stcal"])


def test_every_public_name_exists_and_is_documented():
    for module_name, names in PUBLIC.items():
        module = {"skyeq": skyeq, "skyeq.io": skyeq.io, "skyeq.synthetic": skyeq.synthetic,
                  "skyeq.compat.stcal": skyeq.compat.stcal}[module_name]
        for name in names:
            obj = getattr(module, name)
            if name == "__version__":
                assert isinstance(obj, str)
                continue
            doc = inspect.getdoc(obj) or ""
            assert len(doc) > 40, f"{module_name}.{name} has no real docstring"
            if inspect.isfunction(obj):
                hints = inspect.get_annotations(obj)
                assert "return" in hints, f"{module_name}.{name} has no return type hint"
