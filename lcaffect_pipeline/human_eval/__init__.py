"""The human evaluation of synthetic live comments (the paper's first open question): do people
agree that what V2LC retrieves for a clip is what its viewers would have written?

A kit (``kit.build_kit``) is a blinded, seeded sample of segments of the encoder's held-out videos
(``split.json`` of its run: clips it never trained on). Each item shows the clip and three comment
sets in an order shuffled per item: the segment's real comments, the corpus comments nearest to its
synthetic feature (V2LC's video embedding, searched in the comment tower's space over the training
videos' comments), and the comments retrieved for a random other segment (the control). Raters
pick the set that fits the clip and rate each 1-5 on a self-contained page (``page.render``) and
export a JSON file; ``ratings.report`` scores the files against the key. Lake layout::

    human_eval/{kit_id}/page/index.html, page/clips/item-NN.mp4   what raters get (no key inside)
    human_eval/{kit_id}/key.json                                   which set is which (written last)
    human_eval/{kit_id}/ratings/*.json                             the raters' exports, put there by hand
    human_eval/{kit_id}/reports/{version}/report.{json,md}         every report (never overwritten)
"""
