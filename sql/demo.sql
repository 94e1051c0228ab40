-- demo.sql - what a detector named 'demo' finds in Fashion-MNIST's test set.
-- Run by scripts/demo.sh after it has imported the data and registered (or
-- trained) the model; the class it was trained on is in demo_setup.
.headers off
.mode list
SELECT 'model:  ' || name || ' (' || method || ', ' || width || 'x' || height || 'x' ||
       channels || ', ' || params || ' parameters, threshold ' || printf('%.5f', threshold) || ')'
  FROM anomaly_models WHERE name = 'demo';
SELECT 'normal class: ' || c.label || ' ' || c.name
  FROM demo_setup s JOIN fashion_classes c ON c.label = s.label;

-- score every test image once
DROP TABLE IF EXISTS temp.scored;
CREATE TEMP TABLE scored AS
  SELECT f.id, f.idx, f.label, anomaly_score(f.image, 'demo') AS score,
         f.label <> s.label AS anomalous
  FROM fashion f, demo_setup s WHERE f.split = 'test';

SELECT 'test images: ' || count(*) || ' (' || sum(anomalous) || ' of other classes)' FROM scored;
SELECT 'test AUROC: ' || printf('%.4f', anomaly_auroc(score, anomalous)) FROM scored;
SELECT 'flagged over the threshold: ' || sum(score > m.threshold) || ' images, of which ' ||
       sum(score > m.threshold AND anomalous) || ' truly of other classes'
  FROM scored, anomaly_models m WHERE m.name = 'demo';
SELECT '';
SELECT 'the ten most anomalous test images:';
.mode column
.headers on
SELECT s.idx AS test_image, s.label, c.name, printf('%.5f', s.score) AS score
  FROM scored s JOIN fashion_classes c USING (label)
  ORDER BY s.score DESC LIMIT 10;
.headers off
.mode list
-- each with its reconstruction and its heat map, as PNGs
SELECT 'wrote ' || (sum(a > 0) + sum(b > 0) + sum(c > 0)) ||
       ' PNGs (input, reconstruction and heat map of each) into demo/' FROM (
  SELECT writefile('demo/' || printf('%02d', rank) || '-test' || idx || '-' || label || '-input.png', image) AS a,
         writefile('demo/' || printf('%02d', rank) || '-test' || idx || '-' || label || '-reconstruction.png',
                   anomaly_reconstruct(image, 'demo')) AS b,
         writefile('demo/' || printf('%02d', rank) || '-test' || idx || '-' || label || '-heat.png',
                   anomaly_map(image, 'demo', '{"style": "overlay"}')) AS c
  FROM (SELECT row_number() OVER (ORDER BY s.score DESC) AS rank, s.idx, s.label, f.image
        FROM scored s JOIN fashion f ON f.id = s.id ORDER BY s.score DESC LIMIT 10));
-- and a contact sheet of the sixteen most anomalous: image, repair, map, score
SELECT 'wrote demo/worst.png (a contact sheet of the 16 most anomalous)'
 WHERE (SELECT writefile('demo/worst.png', anomaly_montage(image, 'demo', name || ' #' || idx))
          FROM (SELECT s.idx, f.image, c.name FROM scored s JOIN fashion f ON f.id = s.id
                  JOIN fashion_classes c ON c.label = s.label
                 ORDER BY s.score DESC LIMIT 16)) > 0;
