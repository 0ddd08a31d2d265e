"""Pascal VOC and CSV converters: exact JSON output, problem reports, overwrite protection, CLI."""
import json
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from retinanet.data.convert import ConversionError, convert_csv, convert_voc, split_by_ratio
from retinanet.data.image_io import load_image_rgb

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BCCD_ROOT = os.path.join(os.path.dirname(REPO_ROOT), 'shared', 'datasets', 'BCCD')


def write_image(path, width, height, exif_orientation=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.new('RGB', (width, height), (120, 60, 30))
    if exif_orientation is None:
        image.save(path)
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        image.save(path, exif=exif)


def write_voc_xml(path, filename, size, objects):
    """objects: (name, difficult, (xmin, ymin, xmax, ymax)); size None leaves <size> out."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    parts = ['<annotation>', '<folder>JPEGImages</folder>']
    if filename is not None:
        parts.append(f'<filename>{filename}</filename>')
    parts.append(f'<path>/home/someone/gone/{filename}</path>')
    if size is not None:
        parts.append(f'<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>')
    for name, difficult, (xmin, ymin, xmax, ymax) in objects:
        parts.append(f'<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>'
                     f'<xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax>'
                     f'</bndbox></object>')
    parts.append('</annotation>')
    with open(path, 'w') as handle:
        handle.write('\n'.join(parts))


def write_lines(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as handle:
        handle.write(''.join(line + '\n' for line in lines))


def load_json(path):
    with open(path) as handle:
        return json.load(handle)


@pytest.fixture
def voc_root(tmp_path):
    """A small VOC folder with one problem of every kind."""
    root = tmp_path / 'voc'
    annotations, images = root / 'Annotations', root / 'JPEGImages'
    write_image(str(images / 'img_a.jpg'), 40, 30)
    write_voc_xml(str(annotations / 'img_a.xml'), 'img_a.jpg', (40, 30), [
        ('red cell', 0, (1, 1, 10, 10)),
        ('dog', 1, (5, 6, 20, 25)),
        ('red cell', 0, (30, 20, 50, 40)),  # runs past the image: clipped
    ])
    write_image(str(images / 'img_b.jpg'), 50, 20)
    write_voc_xml(str(annotations / 'img_b.xml'), 'img_b.jpg', (40, 30), [  # <size> is wrong
        ('dog', 0, (45, 5, 60, 18)),
        ('dog', 0, (10, 10, 10, 15)),  # zero width as annotated
        ('dog', 0, ('abc', 1, 5, 5)),  # non-numeric
        ('red cell', 0, (60, 1, 70, 5)),  # right of the image: empty after clipping
    ])
    write_voc_xml(str(annotations / 'img_c.xml'), 'img_c.jpg', (40, 30), [('dog', 0, (1, 1, 5, 5))])
    # img_e is stored 20x10 with EXIF orientation 6 (decoded 10x20); <filename> is stale, no <size>.
    write_image(str(images / 'img_e.jpg'), 20, 10, exif_orientation=6)
    write_voc_xml(str(annotations / 'img_e.xml'), 'renamed.jpg', None, [('dog', 0, (1, 1, 10, 20))])
    write_lines(str(root / 'ImageSets' / 'Main' / 'train.txt'), ['img_a', 'img_b', 'img_c', 'img_d'])
    write_lines(str(root / 'ImageSets' / 'Main' / 'val.txt'), ['img_e'])
    return str(root)


def expected_voc_train(difficult_box):
    annotations = [
        {'id': 1, 'image_id': 1, 'category_id': 2, 'bbox': [0, 0, 10, 10], 'area': 100, 'iscrowd': 0},
        difficult_box,
        {'id': 3, 'image_id': 1, 'category_id': 2, 'bbox': [29, 19, 11, 11], 'area': 121, 'iscrowd': 0},
        {'id': 4, 'image_id': 2, 'category_id': 1, 'bbox': [44, 4, 6, 14], 'area': 84, 'iscrowd': 0},
    ]
    annotations = [annotation for annotation in annotations if annotation is not None]
    for number, annotation in enumerate(annotations, 1):
        annotation['id'] = number
    return {
        'info': {'description': 'converted from Pascal VOC'},
        'licenses': [],
        'images': [{'id': 1, 'file_name': 'img_a.jpg', 'width': 40, 'height': 30},
                   {'id': 2, 'file_name': 'img_b.jpg', 'width': 50, 'height': 20}],
        'annotations': annotations,
        'categories': [{'id': 1, 'name': 'dog', 'supercategory': 'object'},
                       {'id': 2, 'name': 'red cell', 'supercategory': 'object'}],
    }


DIFFICULT_BOX = {'id': 2, 'image_id': 1, 'category_id': 1, 'bbox': [4, 5, 16, 20], 'area': 320}


@pytest.mark.parametrize('difficult, difficult_box', [
    ('crowd', dict(DIFFICULT_BOX, iscrowd=1)),
    ('keep', dict(DIFFICULT_BOX, iscrowd=0)),
    ('skip', None),
])
def test_voc_exact_json_under_each_difficult_mode(voc_root, tmp_path, difficult, difficult_box):
    output = str(tmp_path / 'out')
    summary = convert_voc(voc_root, output, difficult=difficult)

    assert load_json(os.path.join(output, 'train.json')) == expected_voc_train(difficult_box)
    assert load_json(os.path.join(output, 'val.json'))['images'] == [
        {'id': 1, 'file_name': 'img_e.jpg', 'width': 10, 'height': 20}]
    assert load_json(os.path.join(output, 'val.json'))['annotations'] == [
        {'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 10, 20], 'area': 200, 'iscrowd': 0}]
    assert summary['images'] == {'train': 2, 'val': 1}
    assert summary['boxes']['train'] == {'dog': 1 + (difficult != 'skip'), 'red cell': 2}
    assert summary['difficult'] == {'mode': difficult, 'objects': 1}
    assert summary['problems'] == {'missing_image': 1, 'missing_annotation': 1, 'size_mismatch': 2,
                                   'degenerate_box': 2, 'bad_coordinates': 1, 'filename_mismatch': 1}
    messages = '\n'.join(summary['problem_messages'])
    assert 'img_b.xml: object 2' in messages and 'img_b.xml: object 3' in messages
    assert 'img_c.xml: no image img_c.jpg' in messages
    assert "<size> is 40x30, the image is 50x20" in messages
    image_link = os.path.join(output, 'images', 'train', 'img_a.jpg')
    assert os.path.islink(image_link) and os.path.isabs(os.readlink(image_link))


def test_voc_explicit_classes_set_order_and_skip_other_names(voc_root, tmp_path):
    output = str(tmp_path / 'out')
    summary = convert_voc(voc_root, output, sets=['train'], classes=['red cell'])
    train = load_json(os.path.join(output, 'train.json'))
    assert train['categories'] == [{'id': 1, 'name': 'red cell', 'supercategory': 'object'}]
    assert [annotation['bbox'] for annotation in train['annotations']] == [[0, 0, 10, 10], [29, 19, 11, 11]]
    assert summary['problems']['unknown_class'] == 4
    assert not os.path.exists(os.path.join(output, 'val.json'))


def test_second_conversion_without_force_raises_and_writes_nothing(voc_root, tmp_path):
    output = str(tmp_path / 'out')
    convert_voc(voc_root, output)
    json_path = os.path.join(output, 'train.json')
    with open(json_path, 'rb') as handle:
        first = handle.read()
    os.remove(os.path.join(output, 'images', 'train', 'img_a.jpg'))
    with pytest.raises(ConversionError, match='train.json.*already exist'):
        convert_voc(voc_root, output, difficult='keep')
    with open(json_path, 'rb') as handle:
        assert handle.read() == first
    assert not os.path.lexists(os.path.join(output, 'images', 'train', 'img_a.jpg'))
    convert_voc(voc_root, output, difficult='keep', force=True)
    assert load_json(json_path)['annotations'][1]['iscrowd'] == 0
    assert os.path.islink(os.path.join(output, 'images', 'train', 'img_a.jpg'))


def test_two_conversions_give_identical_bytes(voc_root, tmp_path):
    convert_voc(voc_root, str(tmp_path / 'first'))
    convert_voc(voc_root, str(tmp_path / 'second'), copy=True)
    for set_name in ('train', 'val'):
        with open(tmp_path / 'first' / f'{set_name}.json', 'rb') as first, \
                open(tmp_path / 'second' / f'{set_name}.json', 'rb') as second:
            text = first.read()
            assert text == second.read()
        assert str(tmp_path).encode() not in text
    copied = tmp_path / 'second' / 'images' / 'train' / 'img_a.jpg'
    assert copied.is_file() and not copied.is_symlink()


def make_unsplit_voc(root, count):
    for index in range(count):
        write_image(os.path.join(root, 'JPEGImages', f'{index:03d}.jpg'), 16, 16)
        write_voc_xml(os.path.join(root, 'Annotations', f'{index:03d}.xml'), f'{index:03d}.jpg',
                      (16, 16), [('cell', 0, (2, 2, 9, 9))])


def split_file_names(output):
    names = {}
    for set_name in ('train', 'val', 'test'):
        images = load_json(os.path.join(output, f'{set_name}.json'))['images']
        names[set_name] = [image['file_name'] for image in images]
    return names


def test_split_ratio_is_deterministic_and_covers_every_image_once(tmp_path):
    root = str(tmp_path / 'voc')
    make_unsplit_voc(root, 10)
    with pytest.raises(ConversionError, match='split_ratio'):
        convert_voc(root, str(tmp_path / 'unsplit'))
    convert_voc(root, str(tmp_path / 'a'), split_ratio=[0.8, 0.1, 0.1], seed=3407)
    convert_voc(root, str(tmp_path / 'b'), split_ratio=[0.8, 0.1, 0.1], seed=3407)
    convert_voc(root, str(tmp_path / 'c'), split_ratio=[0.8, 0.1, 0.1], seed=1)
    first = split_file_names(str(tmp_path / 'a'))
    assert first == split_file_names(str(tmp_path / 'b'))
    assert first != split_file_names(str(tmp_path / 'c'))
    assert [len(names) for names in first.values()] == [8, 1, 1]
    assert sorted(sum(first.values(), [])) == [f'{index:03d}.jpg' for index in range(10)]


def test_split_by_ratio_sizes():
    image_ids = [str(index) for index in range(7)]
    parts = split_by_ratio(image_ids, [1, 1, 1], seed=3407)
    assert [len(part) for part in parts] == [3, 2, 2]
    assert sorted(sum(parts, [])) == sorted(image_ids)
    assert [len(part) for part in split_by_ratio(list(range(100)), [0.7, 0.2, 0.1], seed=0)] == [70, 20, 10]
    with pytest.raises(ConversionError, match='positive'):
        split_by_ratio(image_ids, [0.9, 0.0], seed=0)


def test_voc_without_annotations_folder_raises(tmp_path):
    with pytest.raises(ConversionError, match='Annotations'):
        convert_voc(str(tmp_path), str(tmp_path / 'out'))


@pytest.fixture
def csv_input(tmp_path):
    """CSV annotations with a quoted class name, an absolute path, an empty image and problems."""
    folder = tmp_path / 'csv'
    write_image(str(folder / 'images' / 'a.jpg'), 40, 30)
    write_image(str(folder / 'images' / 'b.png'), 30, 20)
    other = str(tmp_path / 'elsewhere' / 'c.jpg')
    write_image(other, 12, 8)
    write_lines(str(folder / 'classes.csv'), ['red cell,0', 'cat,1', '"dog, big",2'])
    write_lines(str(folder / 'train.csv'), [
        'images/a.jpg,1,2,11,12,red cell',
        'images/a.jpg,30,20,50,40,"dog, big"',
        f'{other},,,,,',
        'images/b.png,5,5,5,9,cat',
        'images/b.png,a,1,2,3,cat',
        'images/b.png,0,0,10,10,horse',
        'images/missing.jpg,1,1,5,5,cat',
        'images/a.jpg,0,0,4,4,cat',
    ])
    write_lines(str(folder / 'val.csv'), ['images/b.png,2,3,12,8,cat'])
    return {'train': str(folder / 'train.csv'), 'val': str(folder / 'val.csv')}, str(folder / 'classes.csv')


def test_csv_exact_json(csv_input, tmp_path):
    annotations, classes_file = csv_input
    output = str(tmp_path / 'out')
    summary = convert_csv(annotations, classes_file, output)
    categories = [{'id': 1, 'name': 'red cell', 'supercategory': 'object'},
                  {'id': 2, 'name': 'cat', 'supercategory': 'object'},
                  {'id': 3, 'name': 'dog, big', 'supercategory': 'object'}]
    assert load_json(os.path.join(output, 'train.json')) == {
        'info': {'description': 'converted from CSV'},
        'licenses': [],
        'images': [{'id': 1, 'file_name': 'a.jpg', 'width': 40, 'height': 30},
                   {'id': 2, 'file_name': 'c.jpg', 'width': 12, 'height': 8},
                   {'id': 3, 'file_name': 'b.png', 'width': 30, 'height': 20}],
        'annotations': [
            {'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [1, 2, 10, 10], 'area': 100, 'iscrowd': 0},
            {'id': 2, 'image_id': 1, 'category_id': 3, 'bbox': [30, 20, 10, 10], 'area': 100, 'iscrowd': 0},
            {'id': 3, 'image_id': 1, 'category_id': 2, 'bbox': [0, 0, 4, 4], 'area': 16, 'iscrowd': 0},
        ],
        'categories': categories,
    }
    assert load_json(os.path.join(output, 'val.json'))['annotations'] == [
        {'id': 1, 'image_id': 1, 'category_id': 2, 'bbox': [2, 3, 10, 5], 'area': 50, 'iscrowd': 0}]
    assert summary['images'] == {'train': 3, 'val': 1}
    assert summary['problems'] == {'degenerate_box': 1, 'bad_coordinates': 1, 'unknown_class': 1,
                                   'missing_image': 1}
    assert any('train.csv:4 (b.png' in message for message in summary['problem_messages'])


def test_csv_force_protection_and_identical_bytes(csv_input, tmp_path):
    annotations, classes_file = csv_input
    output = str(tmp_path / 'out')
    convert_csv(annotations, classes_file, output)
    with open(os.path.join(output, 'train.json'), 'rb') as handle:
        first = handle.read()
    with pytest.raises(ConversionError, match='already exist'):
        convert_csv(annotations, classes_file, output)
    convert_csv(annotations, classes_file, output, force=True)
    with open(os.path.join(output, 'train.json'), 'rb') as handle:
        assert handle.read() == first


def test_csv_colliding_file_names_raise_before_writing(tmp_path):
    write_image(str(tmp_path / 'one' / 'x.jpg'), 10, 10)
    write_image(str(tmp_path / 'two' / 'x.jpg'), 10, 10)
    write_lines(str(tmp_path / 'classes.csv'), ['cell,0'])
    write_lines(str(tmp_path / 'train.csv'), ['one/x.jpg,1,1,5,5,cell', 'two/x.jpg,1,1,5,5,cell'])
    with pytest.raises(ConversionError, match='both be written as images/train/x.jpg'):
        convert_csv({'train': str(tmp_path / 'train.csv')}, str(tmp_path / 'classes.csv'),
                    str(tmp_path / 'out'))
    assert not os.path.exists(tmp_path / 'out')


def test_csv_sizes_are_those_the_loader_decodes_and_unreadable_images_are_skipped(tmp_path):
    # A TIFF stored 20x10 with orientation 6 is 10 wide, 20 high upright; Pillow already gives
    # TIFF sizes upright, so swapping them again for the orientation would be wrong.
    write_image(str(tmp_path / 'rotated.tif'), 20, 10, exif_orientation=6)
    write_image(str(tmp_path / 'rotated.jpg'), 20, 10, exif_orientation=6)
    (tmp_path / 'broken.jpg').write_text('not a picture')
    write_lines(str(tmp_path / 'classes.csv'), ['cell,0'])
    write_lines(str(tmp_path / 'train.csv'), ['rotated.tif,1,1,5,15,cell', 'rotated.jpg,,,,,',
                                              'broken.jpg,1,1,5,5,cell'])
    output = str(tmp_path / 'out')
    summary = convert_csv({'train': str(tmp_path / 'train.csv')}, str(tmp_path / 'classes.csv'), output)
    images = load_json(os.path.join(output, 'train.json'))['images']
    assert [(image['width'], image['height']) for image in images] == [(10, 20), (10, 20)]
    for image in images:
        decoded = load_image_rgb(os.path.join(output, 'images', 'train', image['file_name']))
        assert decoded.shape[:2] == (image['height'], image['width'])
    assert summary['problems'] == {'unreadable_image': 1}
    assert summary['problem_messages'] == [
        f"unreadable_image: {tmp_path / 'train.csv'}:3: {tmp_path / 'broken.jpg'}: "
        f"not an image file (format not recognised)"]


def run_script(name, *arguments):
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'tools', name), *arguments],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)


def test_cli_exit_code_2_without_traceback(tmp_path, voc_root):
    missing = run_script('voc_to_coco.py', '--voc_root', str(tmp_path / 'nowhere'),
                         '--output', str(tmp_path / 'o'))
    assert missing.returncode == 2
    assert 'Annotations' in missing.stderr and 'Traceback' not in missing.stderr
    bad_classes = run_script('csv_to_coco.py', '--annotations', f'train={tmp_path / "none.csv"}',
                             '--classes', str(tmp_path / 'none_classes.csv'), '--output', str(tmp_path / 'o'))
    assert bad_classes.returncode == 2
    assert 'none_classes.csv: class file not found' in bad_classes.stderr
    assert 'Traceback' not in bad_classes.stderr
    converted = run_script('voc_to_coco.py', '--voc_root', voc_root, '--output', str(tmp_path / 'o'))
    assert converted.returncode == 0, converted.stderr
    assert 'train: 2 images, 4 boxes (dog 2, red cell 2), 1 with iscrowd=1' in converted.stdout
    assert 'degenerate_box: ' in converted.stderr


@pytest.mark.skipif(not os.path.isdir(BCCD_ROOT), reason=f'{BCCD_ROOT} not found')
def test_bccd_sample(tmp_path):
    root = tmp_path / 'bccd'
    splits = {'train': ['BloodImage_00003', 'BloodImage_00005', 'BloodImage_00338'],
              'val': ['BloodImage_00006']}
    for image_id in sum(splits.values(), []):
        for folder, extension in (('Annotations', '.xml'), ('JPEGImages', '.jpg')):
            os.makedirs(root / folder, exist_ok=True)
            file_name = image_id + extension
            shutil.copyfile(os.path.join(BCCD_ROOT, folder, file_name), root / folder / file_name)
    for set_name, image_ids in splits.items():
        write_lines(str(root / 'ImageSets' / 'Main' / f'{set_name}.txt'), image_ids)
    output = str(tmp_path / 'out')
    summary = convert_voc(str(root), output)
    train = load_json(os.path.join(output, 'train.json'))
    assert [category['name'] for category in train['categories']] == ['Platelets', 'RBC', 'WBC']
    assert [image['file_name'] for image in train['images']] == [name + '.jpg' for name in splits['train']]
    assert all((image['width'], image['height']) == (640, 480) for image in train['images'])
    # BloodImage_00338 object 13 has xmin == xmax and ymin == ymax: skipped.
    assert summary['boxes'] == {'train': {'Platelets': 4, 'RBC': 45, 'WBC': 3},
                                'val': {'Platelets': 3, 'RBC': 14, 'WBC': 1}}
    assert summary['problems'] == {'degenerate_box': 1}
    assert 'BloodImage_00338.xml: object 13' in summary['problem_messages'][0]

    # The converted images train: one short step on them through the real training loop.
    torch = pytest.importorskip('torch')
    from retinanet.data.coco import CocoDetection
    from retinanet.data.loader import collate
    from retinanet.models.loss import RetinaNetLoss
    from retinanet.models.retinanet import RetinaNet
    from retinanet.data.transforms import TrainTransform

    dataset = CocoDetection(output, 'train', TrainTransform(min_side=160, max_side=224))
    images, targets, skipped = collate([dataset[(index, index)] for index in range(len(dataset))])
    assert skipped == 0 and images.shape == (3, 3, 160, 224)  # 480x640 scaled by 1/3, padded to 32
    torch.manual_seed(0)
    model = RetinaNet(num_classes=3, depth=18, norm='gn', head_norm='gn', fpn_channels=64)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    losses = RetinaNetLoss(low_quality_matches=True)(model(images), targets)
    optimizer.zero_grad()
    losses['loss'].backward()
    optimizer.step()
    assert torch.isfinite(losses['loss']) and losses['box_loss'].item() > 0
    assert all(len(target['boxes']) > 0 for target in targets)
